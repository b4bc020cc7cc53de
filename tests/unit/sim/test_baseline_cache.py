"""The baselines' cache: computed once per key, a change to the data is a new key."""

from sim.baseline_cache import baseline_key, cached


def test_results_are_computed_once_per_key_and_a_torn_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSWARM_CACHE", str(tmp_path / "cache"))
    calls = []

    def compute():
        calls.append(1)
        return {"fedavg": {"mean_accuracy": 0.9}}

    first, fresh = cached("k1", compute)
    again, source = cached("k1", compute)
    assert first == {"fedavg": {"mean_accuracy": 0.9}} and fresh is None and len(calls) == 1
    assert again == first and source is not None and source.name == "k1.json"
    cached("k2", compute)
    assert len(calls) == 2
    (tmp_path / "cache" / "baselines" / "k1.json").write_text('{"fedavg": ')  # torn
    assert cached("k1", compute) == (first, None) and len(calls) == 3


def test_the_key_follows_settings_data_and_schema(tmp_path):
    files = {n: tmp_path / f"{n}.csv" for n in ("a", "b")}
    for n, f in files.items():
        f.write_text(f"x,y\n1,{n}\n")
    schema = tmp_path / "schema.toml"
    schema.write_text("header = true\n")
    key = baseline_key({"seed": 0}, files, ["a", "b"], schema)
    assert key == baseline_key({"seed": 0}, files, ["b", "a"], schema)
    assert key != baseline_key({"seed": 1}, files, ["a", "b"], schema)
    assert key != baseline_key({"seed": 0}, files, ["a"], schema)
    files["b"].write_text("x,y\n2,b\n")
    changed = baseline_key({"seed": 0}, files, ["a", "b"], schema)
    assert changed != key
    schema.write_text("header = false\n")
    assert baseline_key({"seed": 0}, files, ["a", "b"], schema) != changed
