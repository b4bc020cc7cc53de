"""A run folder as the live dashboard shows it, read while the simulator writes it.

What is read: the seed's `run.json` (its plan: nodes, rounds, faults; `swarm.json` for runs made
before it existed), each node's `out/peer.json` (its peer ID) and `out/metrics.jsonl` (only the
bytes appended since the last poll), its kept round models (for the consensus distance, each
round once), and at the end `summary.json`, `consensus.json` and the report. Nothing else: the
folder also holds the nodes' private keys, and no path here leads to them. Only the report and
its plots are ever served (`report_file`).
"""

import json
import re
from pathlib import Path
from typing import Any

from medswarm.web.tail import JsonlTail
from sim.consensus import consensus_at
from sim.run_folder import RUN_INFO, SWARM_MANIFEST, holds_a_run, holds_a_seed, in_effect

SEED_FOLDER = re.compile(r"seed-(-?\d+)")
# The files of a report: report.html (plots inlined), report.md and its PNGs. A bare name in
# the report's folder; anything else (a key file, a path with a separator, ..) is refused.
REPORT_FILE = re.compile(r"[A-Za-z0-9_-]+\.(html|md|png)")
CONSENSUS_PER_POLL = 5  # rounds of model files read per poll at most: the page stays live
NODE_SUMMARY_KEYS = (
    "accuracy",
    "auc",
    "bytes_sent",
    "contribution",
    "reward_eth",
    "epsilon",
    "honest",
    "finished",
)

Event = tuple[str, Any]


class NotARunFolder(ValueError):
    """The folder holds no simulator run."""


def check_run_folder(root: Path) -> None:
    if not root.is_dir():
        raise NotARunFolder(f"{root} is not a folder: expected a run folder (`sim run --out`)")
    if not holds_a_run(root):
        raise NotARunFolder(
            f"{root} is not a run folder: expected {RUN_INFO} or swarm.json in it (one seed's "
            "run), or seed-<n>/ folders holding them (a run of several seeds), as "
            "`medswarm sim run SCENARIO --out RUN_DIR` writes them"
        )


def compact(record: dict[str, Any], peers: dict[str, str]) -> dict[str, Any]:
    """What the page plots of one metrics record; contribution scores by node name where the
    peer ID is known (else by peer ID)."""
    merged = record.get("merged") or {}
    privacy = record.get("privacy") or {}
    scores = (record.get("contribution") or {}).get("scores") or {}
    return {
        "round": int(record["round"]),
        "accuracy": merged.get("accuracy"),
        "auc": merged.get("auc"),
        "loss": merged.get("loss"),
        "bytes_sent": record.get("bytes_sent", 0),
        "bytes_received": record.get("bytes_received", 0),
        "round_seconds": record.get("round_seconds"),
        "epsilon": privacy.get("epsilon"),
        "failures": len(record.get("failures") or {}),
        "scores": {peers.get(p, p): s for p, s in scores.items()},
    }


def _read_json(path: Path) -> Any:
    """The file's JSON, or None while it is missing or half written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class RunState:
    """The state of the run in `root` (one seed's folder, or the newest seed's of a run of
    several), advanced by `poll()`, which returns what changed as events for the page."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reset(None)

    def _reset(self, folder: Path | None) -> None:
        self.folder = folder
        self.info: dict[str, Any] = {}
        self.tails: dict[str, JsonlTail] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.peers: dict[str, str] = {}  # peer ID -> node name
        self.consensus: dict[int, float] = {}
        self.consensus_next = 1  # the next round whose distance is computed live
        self.consensus_final = False  # consensus.json read
        self.summary: dict[str, Any] | None = None
        self.status: dict[str, Any] = {}

    # -- where ----------------------------------------------------------------------------

    def seed_folders(self) -> list[Path]:
        found = [
            p for p in self.root.glob("seed-*") if SEED_FOLDER.fullmatch(p.name) and holds_a_seed(p)
        ]
        return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))

    def current_folder(self) -> Path | None:
        """The seed folder being written: the run folder itself, or its newest seed's."""
        if holds_a_seed(self.root):
            return self.root
        seeds = self.seed_folders()
        if not seeds:
            return None

        def started(p: Path) -> float:
            info = _read_json(p / RUN_INFO)
            if isinstance(info, dict) and "started" in info:
                return float(info["started"])
            return (p / SWARM_MANIFEST).stat().st_mtime

        return max(seeds, key=started)

    def report_folder(self) -> Path | None:
        """Where the report is: the run folder's (a single seed, or every seed done), else
        the current seed's once it has one."""
        single = self.folder == self.root
        if (single or (self.root / "seeds.json").is_file()) and (
            self.root / "report.html"
        ).is_file():
            return self.root
        if self.folder is not None and (self.folder / "report.html").is_file():
            return self.folder
        return None

    def report_file(self, name: str) -> Path | None:
        """The report's file `name` (report.html, report.md or a PNG beside them), or None:
        for any other name, a path, a link, or before the report exists."""
        if not REPORT_FILE.fullmatch(name):
            return None
        folder = self.report_folder()
        if folder is None:
            return None
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return None
        if path.resolve().parent != folder.resolve():
            return None
        return path

    # -- reading --------------------------------------------------------------------------

    def poll(self) -> list[Event]:
        """Read what is new; return the events that bring a page from the last state to this
        one: a whole `snapshot` when the seed changed, else `records`, `consensus`, `status`."""
        folder = self.current_folder()
        if folder != self.folder:
            self._reset(folder)
            self._read()
            return [("snapshot", self.snapshot())]
        events = self._read()
        return events

    def _read(self) -> list[Event]:
        events: list[Event] = []
        if self.folder is None:
            self.status = self._status()
            return events
        if not self.info:
            self.info = self._load_info(self.folder)
        names = self.names()
        for n in names:
            self.records.setdefault(n, [])
            if n not in self.peers.values():
                peer = _read_json(self.folder / "nodes" / n / "out" / "peer.json")
                if isinstance(peer, dict) and "peer_id" in peer:
                    self.peers[str(peer["peer_id"])] = n
        new: dict[str, Any] = {}
        for n in names:
            tail = self.tails.setdefault(
                n, JsonlTail(self.folder / "nodes" / n / "out" / "metrics.jsonl")
            )
            records = [r for r in tail.read() if "round" in r]
            for r in records:
                if r.get("peer_id"):
                    self.peers.setdefault(str(r["peer_id"]), n)
            if tail.restarted:
                self.records[n] = []
            if records or tail.restarted:
                compacted = [compact(r, self.peers) for r in records]
                self.records.setdefault(n, []).extend(compacted)
                new[n] = {"replace": tail.restarted, "records": compacted}
        if new:
            events.append(("records", new))
        if self.summary is None:
            summary = _read_json(self.folder / "summary.json")
            if isinstance(summary, dict) and "nodes" in summary:
                self.summary = summary
        points = self._consensus()
        if points is not None:
            events.append(("consensus", points))
        status = self._status()
        if status != self.status:
            self.status = status
            events.append(("status", status))
        return events

    def _load_info(self, folder: Path) -> dict[str, Any]:
        info = _read_json(folder / RUN_INFO)
        if isinstance(info, dict) and "nodes" in info:
            return info
        swarm = _read_json(folder / SWARM_MANIFEST)  # a run from before run.json
        if isinstance(swarm, dict) and "nodes" in swarm:
            return {"nodes": list(swarm["nodes"]), "rounds": swarm.get("rounds")}
        return {}

    def names(self) -> list[str]:
        return [str(n) for n in self.info.get("nodes", [])]

    def latest(self) -> dict[str, int]:
        """Each node's last recorded round (0 before its first)."""
        return {n: self.records[n][-1]["round"] if self.records.get(n) else 0 for n in self.names()}

    def windows(self) -> list[dict[str, Any]]:
        if self.summary is not None:
            return list(self.summary.get("fault_windows") or [])
        return list(self.info.get("fault_windows") or [])

    def _consensus(self) -> dict[str, Any] | None:
        """New consensus-distance points: live, round by round once every node has recorded
        the round (or is down or frozen in it); at the end, consensus.json's (all of them)."""
        assert self.folder is not None
        if self.consensus_final:
            return None
        if self.summary is not None:
            final = _read_json(self.folder / "consensus.json")
            if isinstance(final, list):
                self.consensus = {int(p["round"]): float(p["distance"]) for p in final}
                self.consensus_final = True
                return {"replace": True, "points": self._points()}
        names, latest, windows = self.names(), self.latest(), self.windows()
        added = []
        for _ in range(CONSENSUS_PER_POLL):
            r = self.consensus_next
            reached = [n for n in names if latest[n] >= r]
            excused = {  # "<node> down", "<node> frozen"
                n for label in in_effect(windows, r) for n in names if label.startswith(f"{n} ")
            }
            if not reached or any(n not in excused for n in names if latest[n] < r):
                break
            distance = consensus_at(self.folder, names, r)
            if distance is not None:
                self.consensus[r] = distance
                added.append({"round": r, "distance": distance})
            self.consensus_next += 1
        return {"replace": False, "points": added} if added else None

    def _points(self) -> list[dict[str, Any]]:
        return [{"round": r, "distance": d} for r, d in sorted(self.consensus.items())]

    def _status(self) -> dict[str, Any]:
        latest = self.latest()
        info = dict(self.info)
        for key in ("scenario", "seed", "backend", "rounds"):  # a run from before run.json
            if info.get(key) is None and self.summary is not None:
                info[key] = self.summary.get(key)
        current = min(latest.values(), default=0)
        windows = self.windows()
        summary = self.summary
        report = self.report_folder()
        return {
            "root": str(self.root),
            "folder": None if self.folder is None else self.folder.name,
            "multi_seed": self.folder is not None and self.folder != self.root,
            "seeds": [p.name for p in self.seed_folders()],
            "scenario": info.get("scenario"),
            "seed": info.get("seed"),
            "backend": info.get("backend"),
            "chain": info.get("chain"),
            "rounds": info.get("rounds"),
            "nodes": self.names(),
            "honest": info.get("honest"),
            "faults": (summary or info).get("faults") or [],
            "attacks": (summary or info).get("attacks") or [],
            "fault_windows": windows,
            "latest": latest,
            "current_round": current,
            "in_effect": in_effect(windows, current) if summary is None else [],
            "peers": dict(self.peers),
            "finished": summary is not None,
            "summary": None if summary is None else _summary_table(summary),
            "report": None if report is None else "report.html",
            "report_scope": None if report is None else ("run" if report == self.root else "seed"),
            "complete": self._complete(),
        }

    def _complete(self) -> bool:
        """Whether the whole run is over (every seed's, and the report written)."""
        if self.folder is None:
            return False
        if self.folder == self.root:
            return (self.root / "report.html").is_file()
        return (self.root / "seeds.json").is_file()

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "records": self.records,
            "consensus": self._points(),
        }


def _summary_table(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the final table, as summary.json has them."""
    ledger = summary.get("ledger") or {}
    return {
        "nodes": {n: {k: v.get(k) for k in NODE_SUMMARY_KEYS} for n, v in summary["nodes"].items()},
        "mean": summary.get("mean"),
        "wall_seconds": summary.get("wall_seconds"),
        "audit_ok": ledger.get("audit_ok"),
    }
