"""`medswarm bench analytics`: the swarm's federated statistics and GLMs against pandas and
statsmodels on the pooled records. The four heart-disease hospitals, and a synthetic data set
with known coefficients at 10 and 50 sites; each a simulator run of real libp2p nodes."""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from medswarm.bench.tables import bench_table

FAMILIES = ("binomial", "poisson", "gaussian")
HEART_FORMULAS = {
    "binomial": "outcome ~ age + sex + cp + thalach + exang + oldpeak",
    "poisson": "num ~ age + sex + cp + exang",
    "gaussian": "thalach ~ age + sex + exang",
}
SYNTHETIC_FORMULAS = {
    "binomial": "outcome ~ x1 + x2 + x3 + group",
    "poisson": "count ~ x1 + x2 + x3 + group",
    "gaussian": "level ~ x1 + x2 + x3 + group",
}
# The synthetic truth, on (intercept, x1, x2, x3, group[T.2], group[T.3]).
TRUE_COEF = np.array([-0.3, 0.8, -0.5, 0.25, 0.4, -0.6])
SYNTHETIC_SCHEMA = """\
header = true
[target]
column = "y"
positive_above = 0
[[features]]
name = "x1"
[[features]]
name = "x2"
[[features]]
name = "x3"
[[features]]
name = "group"
kind = "categorical"
levels = [1, 2, 3]
[[features]]
name = "count"
min = 0
[[features]]
name = "level"
"""


@dataclass(frozen=True)
class Dataset:
    name: str
    sites: dict[str, Path]
    schema: Path
    formulas: dict[str, str]
    columns: list[str]  # the statistics compared with pandas


def heart_disease() -> Dataset:
    from sim.local_swarm import HEART_DISEASE

    sites = {s: HEART_DISEASE / f"processed.{s}.data" for s in
             ("cleveland", "hungarian", "switzerland", "va")}  # fmt: skip
    columns = ["age", "trestbps", "chol", "thalach", "oldpeak", "num"]
    return Dataset("heart-disease", sites, HEART_DISEASE / "schema.toml", HEART_FORMULAS, columns)


def synthetic(folder: Path, sites: int, rows_per_site: int, seed: int) -> Dataset:
    """Sites of one population with known coefficients for all three families, sizes varying
    two-fold; written as CSV files with their schema."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(sites):
        n = int(rows_per_site * rng.uniform(0.5, 1.5))
        x = rng.normal(size=(n, 3))
        group = rng.integers(1, 4, n)
        design = np.column_stack([np.ones(n), x, group == 2, group == 3]).astype(float)
        eta = design @ TRUE_COEF
        frame = pd.DataFrame({
            "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "group": group,
            "count": rng.poisson(np.exp(eta)),
            "level": eta + rng.normal(scale=0.7, size=n),
            "y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int),
        })  # fmt: skip
        files[f"s{i:02d}"] = folder / f"s{i:02d}.csv"
        frame.to_csv(files[f"s{i:02d}"], index=False, float_format="%.10g")
    (folder / "schema.toml").write_text(SYNTHETIC_SCHEMA)
    return Dataset(f"synthetic-{sites}", files, folder / "schema.toml", SYNTHETIC_FORMULAS,
                   ["x1", "x2", "x3", "count", "level"])  # fmt: skip


def scenario_text(data: Dataset, backend: str, workers: int) -> str:
    sites = "\n".join(f'{n} = "{p}"' for n, p in data.sites.items())
    models = "".join(
        f'\n[[analytics.glm]]\nformula = "{data.formulas[f]}"\nfamily = "{f}"\n' for f in FAMILIES
    )
    degree = "" if len(data.sites) <= 5 else "\ndegree = 4"
    kind = "full" if len(data.sites) <= 5 else "k_regular"
    return f"""name = "bench-analytics-{data.name}"
backend = "{backend}"
workers = {workers if backend == "inproc" else 1}
[data]
schema = "{data.schema}"
[data.sites]
{sites}
[topology]
kind = "{kind}"{degree}
[timeouts]
startup_seconds = 120
[analytics.stats]
columns = {data.columns}
{models}"""


def compare(data: Dataset, summary: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    """Each model's largest coefficient and SE differences from statsmodels on the pooled
    records, and the statistics' from pandas."""
    import statsmodels.api as sm

    from node.analytics.design import design
    from node.dataset import load_frame, load_schema

    schema = load_schema(data.schema)
    pooled = pd.concat([load_frame(p, schema) for p in data.sites.values()], ignore_index=True)
    answer = summary["answer"]
    if answer is None:
        errors = {n: o["error"] for n, o in summary["nodes"].items() if o["error"]}
        raise RuntimeError(f"{data.name}: no answer: {errors}")
    answered = [o for o in summary["nodes"].values() if o["answered"]]
    bytes_per_node = float(np.mean([o["bytes_per_node"] for o in answered]))
    seconds = float(np.mean([o["seconds"] for o in answered]))
    families = {"binomial": sm.families.Binomial(), "poisson": sm.families.Poisson(),
                "gaussian": sm.families.Gaussian()}  # fmt: skip
    glm = []
    for model in answer["glm"]:
        if "error" in model:
            raise RuntimeError(f"{data.name} {model['family']}: {model['error']}")
        d = design(pooled, model["formula"])
        # Converged fully: at its default tolerance statsmodels' SEs come from the weights of
        # its last iterate but one (about 1e-6 off the converged ones on heart disease).
        reference = sm.GLM(d.y, d.x, family=families[model["family"]]).fit(tol=1e-12)
        coef = np.array([c["coef"] for c in model["coefficients"]], dtype=float)
        se = np.array([c["se"] for c in model["coefficients"]], dtype=float)
        glm.append({
            "dataset": data.name, "family": model["family"], "sites": len(data.sites),
            "max_abs_coef_diff": float(np.max(np.abs(coef - reference.params))),
            "max_abs_se_diff": float(np.max(np.abs(se - reference.bse))),
            "iterations": model["iterations"],
            "seconds": seconds,  # the whole query (statistics and every model) per node
            "bytes_per_node": bytes_per_node,
        })  # fmt: skip
    columns = answer["stats"]["columns"]
    stats = {
        "dataset": data.name,
        "max_abs_mean_diff": max(abs(columns[c]["mean"] - pooled[c].mean()) for c in data.columns),
        "max_abs_sd_diff": max(abs(columns[c]["sd"] - pooled[c].std()) for c in data.columns),
    }
    return glm, stats


def run_analytics_bench(
    console: Console, sites: list[int], rows_per_site: int, backend: str, workers: int, seed: int
) -> dict[str, Any]:
    import tempfile

    from sim.run import run_scenario

    results: dict[str, Any] = {"glm": [], "stats": [], "settings": {
        "backend": backend, "workers": workers, "rows_per_site": rows_per_site, "seed": seed,
        "synthetic_truth": TRUE_COEF.tolist(),
    }}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        datasets = [heart_disease()]
        datasets += [synthetic(Path(tmp) / f"data-{n}", n, rows_per_site, seed) for n in sites]
        for data in datasets:
            console.rule(f"{data.name}: {len(data.sites)} sites")
            scenario = Path(tmp) / f"{data.name}.toml"
            scenario.write_text(scenario_text(data, backend, workers))
            began = time.perf_counter()
            [summary] = run_scenario(scenario, Path(tmp) / data.name, Console(quiet=True))
            glm, stats = compare(data, summary)
            stats["whole_seconds"] = time.perf_counter() - began
            results["glm"] += glm
            results["stats"].append(stats)
    table = bench_table(
        "federated GLMs against statsmodels on the pooled records",
        ["dataset", "family", "sites", "max |coef diff|", "max |SE diff|", "iterations",
         "s / node", "kB / node"],
        left={"dataset", "family"},
    )  # fmt: skip
    for g in results["glm"]:
        table.add_row(g["dataset"], g["family"], str(g["sites"]), f"{g['max_abs_coef_diff']:.1e}",
                      f"{g['max_abs_se_diff']:.1e}", str(g["iterations"]), f"{g['seconds']:.1f}",
                      f"{g['bytes_per_node'] / 1000:.0f}")  # fmt: skip
    console.print(table)
    stats_table = bench_table("statistics against pandas", ["dataset", "max |mean diff|",
                              "max |sd diff|"], left={"dataset"})  # fmt: skip
    for s in results["stats"]:
        stats_table.add_row(s["dataset"], f"{s['max_abs_mean_diff']:.1e}",
                            f"{s['max_abs_sd_diff']:.1e}")  # fmt: skip
    console.print(stats_table)
    return results
