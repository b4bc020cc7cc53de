"""A seeded synthetic workload: binary classification records from scikit-learn's
`make_classification`, as Parquet plus the data schema that `node.dataset` reads.

A scenario asks for it with ``[data] synthetic = {rows = 200000, features = 64, seed = 0}``
instead of ``file`` and ``schema``; the simulator generates it into the run's ``data/`` folder
and splits it like any other data set. The same spec and seed give the same records anywhere.

Features are named ``x00``, ``x01``, ... and the target ``y`` (0 or 1). Records are stored as
float32 (the model trains in float32) and the schema turns duplicate detection off: with
continuous features a duplicate is a coincidence, and looking for one costs a pass over every
row in Python.
"""

import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import pyarrow as pa

TARGET = "y"
DATA_FILE = "synthetic.parquet"
SCHEMA_FILE = "schema.toml"


class SyntheticSpec(BaseModel):
    """What `make_classification` is asked for (two classes, two clusters per class)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=4, le=100_000_000)
    features: int = Field(ge=2, le=10_000)
    seed: int = Field(0, ge=0, lt=2**32)
    # Features that carry the signal; the rest are noise. Default: half of them.
    informative: int | None = Field(None, ge=2)
    class_sep: float = Field(1.0, gt=0, allow_inf_nan=False)
    flip_y: float = Field(0.01, ge=0, lt=1)  # share of labels drawn at random (label noise)

    @model_validator(mode="after")
    def _informative_fits(self) -> Self:
        if self.informative is not None and self.informative > self.features:
            raise ValueError(
                f"informative ({self.informative}) cannot exceed features ({self.features})"
            )
        return self

    @property
    def n_informative(self) -> int:
        return self.informative if self.informative is not None else max(2, self.features // 2)

    def columns(self) -> list[str]:
        width = max(2, len(str(self.features - 1)))
        return [f"x{i:0{width}d}" for i in range(self.features)]


@lru_cache(maxsize=1)
def generate(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """The records: features (rows x features, float32) and labels (int64, 0 or 1). The last
    call is cached (a scenario's check and its run ask for the same); `generate.cache_clear()`
    lets the memory go.

    Made in a child process (`python -m sim.synthetic`): scikit-learn, the scipy it imports and
    the generation's float64 working copies (about 130 MB together at 200,000 x 64) then never
    sit in the simulator, whose memory a run's peak counts for as long as the run lasts."""
    with tempfile.TemporaryDirectory(prefix="medswarm-synthetic-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "sim.synthetic", spec.model_dump_json(), tmp],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"generating {spec!r} failed:\n{done.stderr[-2000:]}")
        x, y = np.load(Path(tmp) / "x.npy"), np.load(Path(tmp) / "y.npy")
    x.flags.writeable = y.flags.writeable = False  # shared by the cache
    return x, y


def _make_classification(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=spec.rows,
        n_features=spec.features,
        n_informative=spec.n_informative,
        n_redundant=0,
        n_repeated=0,
        n_classes=2,
        class_sep=spec.class_sep,
        flip_y=spec.flip_y,
        random_state=spec.seed,
    )
    return x.astype(np.float32), y.astype(np.int64)


def to_table(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> "pa.Table":
    """Records (all, or some rows of `generate`'s) as an Arrow table with the schema's names."""
    import pyarrow as pa

    columns = {name: pa.array(x[:, j]) for j, name in enumerate(spec.columns())}
    return pa.table({**columns, TARGET: pa.array(y.astype(np.int8))})


def schema_text(spec: SyntheticSpec) -> str:
    """The data schema (TOML) of the generated records."""
    features = "".join(f'  {{ name = "{name}" }},\n' for name in spec.columns())
    return (
        f"# Synthetic records from sklearn make_classification: {spec.rows} rows, "
        f"{spec.features} features ({spec.n_informative} informative), seed {spec.seed}.\n"
        "# Written by medswarm (sim/synthetic.py).\n\n"
        "header = true\n"
        'missing_tokens = ["", "NA"]\n'
        "drop_duplicates = false\n\n"
        f"features = [\n{features}]\n\n"
        f'[target]\ncolumn = "{TARGET}"\npositive_above = 0\n'
    )


def write_schema(spec: SyntheticSpec, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(spec))
    return path


def write_table(table: "pa.Table", path: Path) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_synthetic(spec: SyntheticSpec, folder: Path) -> tuple[Path, Path]:
    """Generate the records into `folder`: (the Parquet file, the schema TOML)."""
    x, y = generate(spec)
    data = write_table(to_table(spec, x, y), folder / DATA_FILE)
    return data, write_schema(spec, folder / SCHEMA_FILE)


if __name__ == "__main__":  # `generate`'s child: SPEC_JSON FOLDER -> FOLDER/x.npy, FOLDER/y.npy
    features, labels = _make_classification(SyntheticSpec.model_validate_json(sys.argv[1]))
    np.save(Path(sys.argv[2]) / "x.npy", features)
    np.save(Path(sys.argv[2]) / "y.npy", labels)
