"""What marks a run folder and what its plan says, for the simulator and for readers of a run
(the live dashboard) alike: light, so a reader does not import the simulator."""

from pathlib import Path
from typing import Any

RUN_INFO = "run.json"  # a seed's plan, written before its rounds (sim.run.write_run_info)
SWARM_MANIFEST = "swarm.json"  # a seed's swarm, written when its nodes are set up


def holds_a_seed(folder: Path) -> bool:
    """Whether `folder` holds one seed's run (its plan or its swarm)."""
    return (folder / RUN_INFO).is_file() or (folder / SWARM_MANIFEST).is_file()


def holds_a_run(out: Path) -> bool:
    """Whether `out` is a run folder: one seed's, or a run of several (seeds.json, or seed-<n>/
    folders holding one each)."""
    if holds_a_seed(out) or (out / "seeds.json").is_file():
        return True
    return any(holds_a_seed(p) for p in out.glob("seed-*"))


def in_effect(windows: list[dict[str, Any]], round_: int) -> list[str]:
    """The labels of the plan's fault windows that cover `round_`."""
    return [w["label"] for w in windows if w["from"] <= round_ <= w["to"]]
