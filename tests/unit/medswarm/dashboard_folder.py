"""A run folder as the simulator writes it, made by hand, round by round, for the dashboard's
tests: run.json, each node's peer.json, metrics.jsonl and round models, and the key files that
must never be served."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

NAMES = ["alpha", "beta", "gamma"]
PEERS = {"alpha": "12D3KooWAlpha", "beta": "12D3KooWBeta", "gamma": "12D3KooWGamma"}
SECRET = "0x" + "ab" * 32  # what the key files hold: must appear in no answer
KEY_FILES = ("eth.key", "identity.key", "x25519.key")


class FakeRun:
    def __init__(self, folder: Path, rounds: int = 6, windows: list[dict[str, Any]] | None = None):
        self.folder = folder
        self.rounds = rounds
        folder.mkdir(parents=True, exist_ok=True)
        self.windows = windows or []
        self.pending: dict[str, str] = {}
        info = {
            "scenario": "fake",
            "seed": 0,
            "backend": "process",
            "rounds": rounds,
            "nodes": NAMES,
            "honest": NAMES,
            "chain": "anvil",
            "analytics": False,
            "faults": ["partition alpha | beta, gamma in rounds 3-4"],
            "attacks": [],
            "fault_windows": self.windows,
            "started": time.time(),
        }
        (folder / "swarm.json").write_text(json.dumps({"nodes": NAMES, "rounds": rounds}))
        (folder / "run.json").write_text(json.dumps(info))
        for n in NAMES:
            node = folder / "nodes" / n
            (node / "out" / "models").mkdir(parents=True)
            for key in KEY_FILES:
                (node / key).write_text(SECRET)
            (node / "node.toml").write_text(f'[node]\nname = "{n}"\n')
            (node / "out" / "peer.json").write_text(
                json.dumps({"name": n, "peer_id": PEERS[n], "addrs": []})
            )

    def model(self, name: str, round_: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(round_ * 10 + NAMES.index(name))
        return {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}

    def record(self, name: str, round_: int, partial: bool = False) -> None:
        """`name` finishes `round_`: its model, then its metrics record (as a node does)."""
        save_file(self.model(name, round_), str(self.models(name) / f"round-{round_}.safetensors"))
        others = [PEERS[m] for m in NAMES if m != name]
        record = {
            "round": round_,
            "node": name,
            "peer_id": PEERS[name],
            "merged": {"accuracy": 0.5 + round_ / 100, "auc": 0.6, "loss": 0.7, "n": 20},
            "bytes_sent": 1000 + round_,
            "bytes_received": 900,
            "round_seconds": 0.1,
            "privacy": None,
            "failures": {},
            "contribution": {"scores": {p: 0.1 * (i + 1) for i, p in enumerate(others)}},
        }
        text = json.dumps(record) + "\n"
        half = len(text) // 2
        if partial:
            self.pending[name] = text[half:]
        with open(self.metrics(name), "a") as f:
            f.write(text[:half] if partial else text)

    def finish_line(self, name: str) -> None:
        """The rest of the record `record(partial=True)` began."""
        with open(self.metrics(name), "a") as f:
            f.write(self.pending.pop(name))

    def models(self, name: str) -> Path:
        return self.folder / "nodes" / name / "out" / "models"

    def metrics(self, name: str) -> Path:
        return self.folder / "nodes" / name / "out" / "metrics.jsonl"

    def finish(self, consensus: list[dict[str, float]]) -> dict[str, Any]:
        nodes = {
            n: {
                "accuracy": 0.81 + i / 100,
                "auc": 0.9,
                "bytes_sent": 12345,
                "contribution": 0.2,
                "reward_eth": 0.5,
                "epsilon": None,
                "honest": True,
                "finished": True,
            }
            for i, n in enumerate(NAMES)
        }
        summary = {
            "scenario": "fake",
            "seed": 0,
            "rounds": self.rounds,
            "nodes": nodes,
            "mean": {"accuracy": 0.82, "auc": 0.9},
            "fault_windows": self.windows,
            "faults": [],
            "attacks": [],
            "ledger": {"audit_ok": True},
            "wall_seconds": 3.0,
        }
        (self.folder / "consensus.json").write_text(json.dumps(consensus))
        (self.folder / "summary.json").write_text(json.dumps(summary))
        (self.folder / "report.html").write_text("<html><body>the report</body></html>")
        (self.folder / "accuracy.png").write_bytes(b"\x89PNG fake")
        return summary
