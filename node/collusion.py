"""A colluding group of simulated attackers: its members pool what each received, so that all of
them publish the one model crafted from the union (simulation only, `[adversary] group_dir`).

Real colluders would talk over a side channel; the simulator's stand-in is a folder the members
share. Each round each member writes the models it received last round, named by sender, to
`round-<r>/<its peer id>.safetensors` there, waits for the group's other members (at most
`wait` seconds: a killed member must not stall the rest) and reads every member's file. The
members' own models are dropped (they are not honest ones), a model that several members
received counts once (a node publishes one model a round), and the union is in sender order:
each member crafts from the same rows, so all publish the same model.
"""

from collections.abc import Sequence
from pathlib import Path

import trio
from safetensors.numpy import load

from node.checkpoint import params_bytes, write_atomic
from node.params import Neighbour, Params

POLL_SECONDS = 0.05
SEP = "/"  # between sender and tensor name in a shared file (a base58 peer ID has none)


async def pooled(
    folder: Path, round_: int, peer: str, received: Sequence[Neighbour], size: int, wait: float
) -> list[Params]:
    """The group's received models for `round_`, once the `size` members wrote theirs (or
    `wait` seconds passed), without the members' own, one per sender, in sender order."""
    here = folder / f"round-{round_}"
    here.mkdir(parents=True, exist_ok=True)
    rows = {f"{nb.peer}{SEP}{name}": t for nb in received for name, t in nb.params.items()}
    write_atomic(here / f"{peer}.safetensors", params_bytes(rows), fsync=False)
    with trio.move_on_after(wait):
        while len(list(here.glob("*.safetensors"))) < size:
            await trio.sleep(POLL_SECONDS)
    files = sorted(here.glob("*.safetensors"))
    members = {path.stem for path in files}
    union: dict[str, Params] = {}
    for path in files:
        for key, tensor in load(path.read_bytes()).items():
            sender, _, name = key.partition(SEP)
            if sender not in members:
                union.setdefault(sender, {}).setdefault(name, tensor)
    return [union[sender] for sender in sorted(union)]
