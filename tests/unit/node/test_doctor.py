"""node doctor's first checks, which need no network: a config that does not validate stops it
there; records the schema cannot use are named with the rule; a node without the ledger and
without neighbours is told so. (The chain and neighbour checks: tests/integration/
test_onboarding.py, on a real Anvil and real libp2p hosts.)"""

from pathlib import Path

from node.doctor import doctor
from node.init import init_node

DATA = Path(__file__).resolve().parents[3] / "data" / "heart-disease"


def site(folder: Path, data: Path = DATA / "processed.cleveland.data") -> Path:
    config, _ = init_node(
        folder, "cleveland", str(data), str(DATA / "schema.toml"), "/ip4/127.0.0.1/tcp/0", []
    )
    return config


def test_an_invalid_config_stops_the_checks_there(tmp_path: Path) -> None:
    config = site(tmp_path)
    config.write_text(config.read_text() + "\n[bogus]\nroundz = 3\n")
    checks = list(doctor(config))
    assert [(c.area, c.ok) for c in checks] == [("config", False)]
    assert "bogus: unknown key" in checks[0].detail
    assert "correct the keys named above" in checks[0].fix


def test_unusable_records_are_named_with_the_rule(tmp_path: Path) -> None:
    records = tmp_path / "records.csv"
    records.write_text("63,1,1\n")  # three fields where the schema has fourteen columns
    checks = list(doctor(site(tmp_path / "site", records)))
    data = next(c for c in checks if c.area == "data")
    assert not data.ok and str(records) in data.detail
    assert "fix the file, column or rule named above" in data.fix


def test_without_ledger_and_neighbours(tmp_path: Path) -> None:
    checks = list(doctor(site(tmp_path)))
    assert [(c.area, c.ok, c.skipped) for c in checks] == [
        ("config", True, False),
        ("data", True, False),
        ("keys", True, False),  # identity
        ("keys", True, False),  # X25519
        ("chain", True, True),
        ("neighbour", False, False),
    ]
    assert "303 rows in, 303 kept (nothing dropped)" in checks[1].detail
    assert "node.neighbours is empty" in checks[-1].detail
