"""The report of one simulator run: plots (PNG), report.md and a self-contained report.html.

Inputs are plain data (the run's summary, each node's metrics records, the consensus distance
per round), so a report can be tested, or rendered again, without running a swarm. Both
documents are rendered from one list of blocks, so they cannot say different things.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich import box
from rich.table import Table as RichTable
from scipy import stats

from sim.heterogeneity import KEYS, METHODS, over_seeds

# Below this many seeds the Wilcoxon signed-rank test cannot reach p < 0.05 (two-sided, exact:
# the smallest p with n pairs is 2 / 2^n), so fewer seeds use the paired t-test.
WILCOXON_MIN_SEEDS = 6
BASELINES = {
    "local_only": "local only",
    "centralized": "centralized",
    "fedavg": "FedAvg (one process)",
    "fedavg_network": "FedAvg (server and clients over libp2p)",
}


# --------------------------------------------------------------------------- content blocks


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    alt: str


Block = Heading | Paragraph | Bullets | Table | Image


def render_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = [b.header, ["---"] * len(b.header), *b.rows]
            cells = [[c.replace("|", "\\|") for c in row] for row in lines]
            out.append("\n".join("| " + " | ".join(row) + " |" for row in cells))
        else:
            out.append(f"![{b.alt}]({b.path.name})")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """A standalone page: the plots are embedded as data URIs, so it can be mailed alone."""
    esc = html.escape
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{data}" alt="{esc(b.alt)}">')
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
        f"</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- significance


@dataclass(frozen=True)
class PairedTest:
    test: str
    statistic: float
    p_value: float  # NaN when every seed gives the same difference (the test is undefined)
    mean_difference: float
    seeds: int


def paired_test(swarm: Sequence[float], local: Sequence[float]) -> PairedTest:
    """Swarm vs local-only mean accuracy, paired by seed (two-sided)."""
    if len(swarm) != len(local) or len(swarm) < 2:
        raise ValueError(f"need >= 2 paired values, got {len(swarm)} and {len(local)}")
    diffs = [s - loc for s, loc in zip(swarm, local, strict=True)]
    mean_diff = sum(diffs) / len(diffs)
    # Equal differences (up to float rounding) have zero spread: both tests are undefined.
    if max(diffs) - min(diffs) <= 1e-12:
        return PairedTest("none", math.nan, math.nan, mean_diff, len(diffs))
    if len(diffs) >= WILCOXON_MIN_SEEDS:
        w = stats.wilcoxon(swarm, local)
        return PairedTest(
            "Wilcoxon signed-rank", float(w.statistic), float(w.pvalue), mean_diff, len(diffs)
        )
    t = stats.ttest_rel(swarm, local)
    return PairedTest("paired t-test", float(t.statistic), float(t.pvalue), mean_diff, len(diffs))


def _significance(seeds_summary: Sequence[dict[str, Any]] | None) -> list[Block]:
    blocks: list[Block] = [Heading("Significance")]
    runs = list(seeds_summary or [])
    if len(runs) >= 2 and not all("local_only" in s.get("baselines", {}) for s in runs):
        blocks.append(Paragraph("No test: some seeds ran without the local-only baseline."))
        return blocks
    if len(runs) < 2:
        blocks.append(
            Paragraph(
                "One seed: a significance test needs several seeds (a paired test of the swarm "
                "against local-only training over seeds). Run the scenario with more seeds."
            )
        )
        return blocks
    result = paired_test(
        [s["mean"]["accuracy"] for s in runs],
        [s["baselines"]["local_only"]["mean_accuracy"] for s in runs],
    )
    if math.isnan(result.p_value):
        verdict = "Every seed gives the same difference, so no test statistic is defined."
    else:
        verdict = (
            f"Test: {result.test} over {result.seeds} seeds, statistic {result.statistic:.3f}, "
            f"p = {result.p_value:.4f} (two-sided)."
        )
    blocks.append(
        Paragraph(
            "Swarm mean accuracy minus local-only mean accuracy, paired by seed: mean "
            f"difference {result.mean_difference:+.4f} over {result.seeds} seeds. {verdict}"
        )
    )
    return blocks


# --------------------------------------------------------------------------- heterogeneity

# The paired comparisons of the heterogeneity section: (method, against, score).
HETEROGENEITY_TESTS = (
    ("personalized_swarm", "local_only", "own_accuracy"),
    ("personalized_swarm", "swarm", "own_auc"),
    ("personalized_swarm", "swarm", "own_accuracy"),
    ("personalized_swarm", "swarm", "all_accuracy"),
)
SCORE_LABELS = {
    "own_accuracy": "own-site accuracy",
    "own_auc": "own-site AUC",
    "all_accuracy": "all-site accuracy",
    "all_auc": "all-site AUC",
}


def _heterogeneity(
    summary: dict[str, Any], seeds_summary: Sequence[dict[str, Any]] | None
) -> list[Block]:
    """Own-site and all-site accuracy and AUC per site for the swarm, the personalized swarm
    and local only: this seed's, or with several seeds their means and paired tests."""
    runs = [s["heterogeneity"] for s in seeds_summary or [] if s.get("heterogeneity")]
    several = len(runs) >= 2
    scores = over_seeds(runs) if several else summary.get("heterogeneity")
    if not scores:
        return []
    seeds = f"means over {len(runs)} seeds" if several else f"seed {summary['seed']}"
    blocks: list[Block] = [
        Heading("Heterogeneity"),
        Paragraph(
            f"Each site's final model (personalization: swarm.personalize = "
            f"{summary['heterogeneity']['personalize']!r}, its local part kept at the site) "
            "scored on its own validation split (own-site) and on every site's, the mean over "
            f"the sites (all-site); {seeds}. Swarm: the same run sharing every parameter. "
            "See docs/heterogeneity.md."
        ),
        _heterogeneity_table(scores),
    ]
    if several:
        blocks.append(Bullets(_heterogeneity_tests(runs)))
    return blocks


def _heterogeneity_table(scores: dict[str, Any]) -> Table:
    methods = [m for m in METHODS if scores.get(m)]
    sites = list(scores[methods[0]]["per_site"])
    rows = [
        [site, METHODS[m], *(_fmt(scores[m]["per_site"].get(site, {}).get(k)) for k in KEYS)]
        for site in sites
        for m in methods
    ]
    rows += [["mean", METHODS[m], *(_fmt(scores[m]["mean"][k]) for k in KEYS)] for m in methods]
    return Table(["hospital", "model", *(SCORE_LABELS[k] for k in KEYS)], rows)


def _heterogeneity_tests(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Each comparison's paired test over the seeds of the means over sites."""
    lines = []
    for method, against, key in HETEROGENEITY_TESTS:
        if not all(r.get(method) and r.get(against) for r in runs):
            continue
        ours = [r[method]["mean"][key] for r in runs]
        theirs = [r[against]["mean"][key] for r in runs]
        if None in ours or None in theirs:
            continue
        result = paired_test(ours, theirs)
        test = (
            "every seed the same difference"
            if math.isnan(result.p_value)
            else f"{result.test}, p = {result.p_value:.4f}"
        )
        lines.append(
            f"mean {SCORE_LABELS[key]}, {METHODS[method]} minus {METHODS[against]}: "
            f"{result.mean_difference:+.4f} over {result.seeds} seeds ({test}, two-sided)"
        )
    return lines


# --------------------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)  # a bare Figure renders with Agg, no pyplot
    return path


def _accuracy_plot(path: Path, summary: dict[str, Any], per_node: dict[str, list]) -> Path:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for name, records in per_node.items():
        ax.plot(
            [r["round"] for r in records],
            [r["merged"]["accuracy"] for r in records],
            marker=".",
            linewidth=1,
            label=name,
        )
    baselines = summary.get("baselines", {})
    # FedAvg over libp2p computes the one-process FedAvg's model: one line draws both.
    styles = {"local_only": ":", "centralized": "--", "fedavg": "-."}
    for kind, style in styles.items():
        label = BASELINES[kind]
        if baselines.get(kind, {}).get("mean_accuracy") is not None:
            ax.axhline(
                baselines[kind]["mean_accuracy"],
                color="grey",
                linestyle=style,
                label=f"{label} (mean, final)",
            )
    history = baselines.get("fedavg", {}).get("history", [])
    if history:
        ax.plot(
            [h["round"] for h in history],
            [h["mean_accuracy"] for h in history],
            color="black",
            linewidth=2,
            label="FedAvg (mean, per round)",
        )
    on = "test-set" if summary.get("evaluated_on") == "test" else "validation"
    ax.set(xlabel="round", ylabel=f"{on} accuracy (merged model)", title="Accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return _save(fig, path)


def _test_plot(path: Path, summary: dict[str, Any]) -> Path:
    """Accuracy on the common test set per round: the nodes' mean with their min-max band,
    beside FedAvg's global model, the centralized model and the local-only models' mean; the
    consensus model (of the final models) at the last round."""
    test = summary["test"]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    rows = test["per_round"]
    rounds = [r["round"] for r in rows]
    ax.fill_between(
        rounds,
        [r["min"] for r in rows],
        [r["max"] for r in rows],
        alpha=0.25,
        label="swarm nodes (min to max)",
    )
    ax.plot(rounds, [r["mean"] for r in rows], marker=".", linewidth=2, label="swarm (mean)")
    baselines = summary.get("baselines", {})
    styles = {"fedavg": "-.", "centralized": "--", "local_only": ":"}
    for kind, style in styles.items():
        curve = (baselines.get(kind) or {}).get("test", {}).get("per_round", [])
        if curve:
            mean = " (mean)" if kind == "local_only" else ""
            ax.plot(
                [h["round"] for h in curve],
                [h["accuracy"] for h in curve],
                color="black",
                linestyle=style,
                linewidth=2 if kind == "fedavg" else 1,
                label=BASELINES[kind] + mean,
            )
    if (agreed := test.get("consensus")) and rounds:
        ax.plot(
            [rounds[-1]], [agreed["accuracy"]], marker="*", markersize=12, linestyle="",
            color="tab:red", label="consensus of the final models",
        )  # fmt: skip
    ax.set(xlabel="round", ylabel="accuracy on the common test set", title="Test set")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return _save(fig, path)


def _test_blocks(summary: dict[str, Any]) -> list[Block]:
    test = summary.get("test")
    if not test or not test["per_round"]:
        return []
    last = test["per_round"][-1]
    dropped = ", ".join(f"{rule} {n}" for rule, n in test.get("dropped", {}).items())
    text = (
        f"Every node, the consensus model and each baseline are scored on one test set "
        f"({test.get('file', 'held out of the data before the split')}; {test.get('rows', '?')} "
        f"rows{f', cleaning dropped {dropped}' if dropped else ''}). Round {last['round']}: mean "
        f"{_fmt(last['mean'])}, min {_fmt(last['min'])}, max {_fmt(last['max'])} over "
        f"{last['nodes']} nodes"
    )
    at = {h["round"]: h["accuracy"] for h in test.get("fedavg_per_round") or []}
    if last["round"] in at:
        text += f"; FedAvg {_fmt(at[last['round']])}"
    blocks: list[Block] = [Heading("Common test set"), Paragraph(text + ".")]
    if "mean" in test:
        blocks.append(_test_table(summary))
    return blocks


def _test_table(summary: dict[str, Any]) -> Table:
    """Each model on the common test set: the swarm's nodes (mean, min, max of their final
    models), the consensus of their final models and each baseline's final model(s)."""
    test = summary["test"]
    honest = [n for n, v in summary["nodes"].items() if v.get("honest", True)]
    accs = [test["nodes"][n]["accuracy"] for n in honest if n in test["nodes"]]
    rows = [
        ["swarm nodes (mean)", _fmt(test["mean"]["accuracy"]), _fmt(test["mean"]["auc"])],
        ["swarm nodes (min, max)", f"{_fmt(min(accs, default=None))}, "
         f"{_fmt(max(accs, default=None))}", ""],
    ]  # fmt: skip
    if agreed := test.get("consensus"):
        rows.append(["consensus model", _fmt(agreed["accuracy"]), _fmt(agreed["auc"])])
    for kind, label in BASELINES.items():
        on_test = (summary.get("baselines", {}).get(kind) or {}).get("test")
        if on_test:
            label += " (mean over sites)" if kind == "local_only" else ""
            rows.append([label, _fmt(on_test["accuracy"]), _fmt(on_test["auc"])])
    return Table(["model (final)", "test accuracy", "test AUC"], rows)


def _cross_site_blocks(summary: dict[str, Any]) -> list[Block]:
    """The cross-site matrices (accuracy, AUC), what each row lacks and whether each row's
    digest holds, in the file and on chain."""
    matrix = summary.get("cross_site")
    if not matrix:
        return []
    nodes = matrix["nodes"]
    rows = [n for n in nodes if n in matrix["accuracy"]]
    checked = [nodes[n] for n in rows]
    verdict = f"{sum(r['digest_matches_row'] for r in checked)} of {len(rows)} rows match the "
    verdict += "sha256 of their canonical JSON"
    if any(r["on_chain"] is not None for r in checked):
        verdict += f"; {sum(bool(r['on_chain']) for r in checked)} equal the digest their "
        verdict += "hospital committed on chain (the audit's evaluations.csv)"
    blocks: list[Block] = [
        Heading("Cross-site evaluation"),
        Paragraph(
            "After the last round each hospital (a row) scored every hospital's final model (a "
            "column) and the consensus of the final models that reached it (their average "
            "weighted by training rows) on its own validation split; the diagonal is each "
            f"hospital's own final model. Each row's digest is in summary.json: {verdict}."
        ),
    ]
    header = ["validation split ↓ / model →", *matrix["columns"]]
    for key, label in (("accuracy", "Accuracy"), ("auc", "AUC")):
        cells = [[n, *(_fmt(v) for v in matrix[key][n].values())] for n in rows]
        blocks += [Heading(label, 3), Table(header, cells)]
    notes = [f"{n}: no row: {r['skipped']}" for n, r in nodes.items() if n not in rows]
    notes += [f"{n}: without the model of {', '.join(nodes[n]['missing'])}"
              for n in rows if nodes[n]["missing"]]  # fmt: skip
    notes += [f"{n}: the digest does not match the row" for n in rows
              if not nodes[n]["digest_matches_row"]]  # fmt: skip
    notes += [f"{n}: the digest on chain is not this row's" for n in rows
              if nodes[n]["on_chain"] is False]  # fmt: skip
    return [*blocks, Bullets(notes)] if notes else blocks


def _consensus_plot(path: Path, summary: dict[str, Any], consensus: list) -> Path:
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    # A log axis cannot show a distance of exactly 0 (identical models); those points are left
    # out rather than clipped to a made-up floor.
    points = [(c["round"], c["distance"]) for c in consensus if c["distance"] > 0]
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color="tab:blue")
    ax.set_yscale("log")
    for i, w in enumerate(summary.get("fault_windows", [])):
        ax.axvspan(w["from"], w["to"], alpha=0.15, color=f"C{i + 1}", label=w["label"])
    if summary.get("fault_windows"):
        ax.legend(fontsize="small")
    ax.set(
        xlabel="round",
        ylabel="mean distance to the average model",
        title="Consensus distance",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def _contribution_plot(path: Path, nodes: dict[str, dict[str, Any]]) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, n in nodes.items():
        if n.get("contribution") is not None:
            ax.scatter(n["rows"], n["contribution"], color="tab:blue")
            ax.annotate(
                name,
                (n["rows"], n["contribution"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
    ax.set(xlabel="rows", ylabel="contribution", title="Contribution vs data size")
    return _save(fig, path)


def _rewards_plot(path: Path, nodes: dict[str, dict[str, Any]]) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    names = [name for name, n in nodes.items() if n.get("reward_eth") is not None]
    ax.bar(names, [nodes[name]["reward_eth"] for name in names], color="tab:green")
    ax.set(ylabel="reward (ETH)", title="Rewards per hospital")
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


# --------------------------------------------------------------------------- report


HOSPITAL_SPLIT = "each hospital's validation split"


def _on(
    summary: dict[str, Any],
    validation: str,
    test: str = "the common test set (no validation split)",
) -> str:
    """What the nodes' (and baselines') accuracy is on: `validation`, or `test` when the run
    held no validation split out."""
    return test if summary.get("evaluated_on") == "test" else validation


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _ledger(settled: dict[str, Any] | None) -> list[Block]:
    if not settled:
        return []
    verdict = "clean" if settled["audit_ok"] else f"{len(settled['findings'])} findings"
    again = (
        f"Repeat it with `{settled['audit_command']}`."
        if settled["audit_command"]
        else "The chain lived only as long as the run; audit/ holds the audit made before it "
        "stopped."
    )
    return [
        Heading("Ledger"),
        Paragraph(
            f"Chain {settled['backend']}, contract {settled['contract']}; epochs finalized: "
            f"{', '.join(map(str, settled['finalized_epochs'])) or 'none'}. Audit of the events "
            f"against the contract's views and {settled['models_checked']} model files: "
            f"{verdict}. {again}"
        ),
    ]


def _privacy(summary: dict[str, Any]) -> list[Block]:
    privacy = summary.get("privacy")
    if not privacy:
        return []
    off = privacy.get("without_dp")
    header = ["hospital", "epsilon", "delta", "accuracy", "attack AUC", "calibrated attack AUC"]
    if off:
        header += ["accuracy, DP off", "attack AUC, DP off", "calibrated, DP off"]
    rows = []
    for name, r in privacy["nodes"].items():
        spent = "—" if r["epsilon"] is None else _fmt(r["epsilon"], 2)
        if r.get("retired_at"):
            spent += f" (spent at round {r['retired_at']})"
        row = [name, spent, "—" if r["delta"] is None else f"{r['delta']:.1e}",
               _fmt(r["accuracy"]), _fmt(r["mia_auc"]), _fmt(r["mia_auc_calibrated"])]  # fmt: skip
        if off:
            o = off["nodes"].get(name, {})
            row += [_fmt(o.get("accuracy")), _fmt(o.get("mia_auc")),
                    _fmt(o.get("mia_auc_calibrated"))]  # fmt: skip
        rows.append(row)
    means = ["mean", "", "", _fmt(summary["mean"]["accuracy"]), _fmt(privacy["mean_mia_auc"]),
             _fmt(privacy["mean_mia_auc_calibrated"])]  # fmt: skip
    if off:
        means += [_fmt(off["mean_accuracy"]), _fmt(off["mean_mia_auc"]),
                  _fmt(off["mean_mia_auc_calibrated"])]  # fmt: skip
    skipped = {r["mia_skipped"] for r in privacy["nodes"].values() if r.get("mia_skipped")}
    notes = "".join(f"No attack: {why}. " for why in sorted(skipped))
    notes += (
        "Secure aggregation was on: neighbours received only sums of models, so the audit's "
        "attacker holds more than a real neighbour did (an upper bound). "
        if privacy["secure_aggregation"]
        else ""
    )
    return [
        Heading("Privacy"),
        Paragraph(
            "Each hospital's spent budget (epsilon at delta, from its accountant; — without "
            "DP-SGD) and the privacy audit: a curious neighbour's membership-inference attacks "
            "on the last model the hospital published, telling its training records from its "
            "held-out ones. Attack AUC: the loss-threshold attack (Yeom et al., 2018); "
            "calibrated: the loss minus the loss under the neighbour's own model of that round "
            "(Watson et al., 2022). 0.5 is a coin toss. " + notes + "See docs/privacy.md."
        ),
        Table(header, [*rows, means]),
    ]


def _node_table(nodes: dict[str, dict[str, Any]], test: dict[str, Any] | None) -> Table:
    # Contribution and reward only exist with a chain; an all-dash column would be noise.
    on_test = (test or {}).get("nodes", {})
    extra = [
        (key, label, digits)
        for key, label, digits in (
            ("epsilon", "epsilon", 2),
            ("contribution", "contribution", 4),
            ("reward_eth", "reward (ETH)", 6),
        )
        if any(n.get(key) is not None for n in nodes.values())
    ]
    header = [
        "hospital",
        "rows",
        "accuracy",
        "AUC",
        "rounds to target",
        "sent (MB)",
        "peak RSS (MB)",
    ]
    header[4:4] = ["test accuracy", "test AUC"] if on_test else []
    rows = []
    for name, n in nodes.items():
        target = n["rounds_to_target"]
        scored = on_test.get(name, {})
        rows.append(
            [
                name,
                str(n["rows"]),
                _fmt(n["accuracy"]),
                _fmt(n["auc"]),
                *([_fmt(scored.get("accuracy")), _fmt(scored.get("auc"))] if on_test else []),
                "—" if target is None else str(target),
                _fmt(n["bytes_sent"] / 1e6, 2),
                _fmt(n["peak_rss_mb"], 0),
                *(_fmt(n.get(key), digits) for key, _, digits in extra),
            ]
        )
    return Table([*header, *(label for _, label, _ in extra)], rows)


def _baseline_table(summary: dict[str, Any]) -> Table:
    swarm = summary["mean"]
    rows = [
        ["swarm", swarm["accuracy"], swarm["auc"], summary.get("wall_seconds"),
         summary.get("rounds_wall_seconds")]
    ]  # fmt: skip
    for kind, label in BASELINES.items():
        if (b := summary.get("baselines", {}).get(kind)) is not None:
            rows.append(
                [label, b["mean_accuracy"], b["mean_auc"], b.get("wall_seconds"),
                 b.get("rounds_wall_seconds")]
            )  # fmt: skip
    return Table(
        ["model", "mean accuracy", "mean AUC", "wall seconds", "rounds 2 on, seconds"],
        [[label, _fmt(acc), _fmt(auc), _fmt(s, 1), _fmt(r, 1)] for label, acc, auc, s, r in rows],
    )


TERMINAL_TABLE: dict[str, Any] = {
    "box": box.SIMPLE_HEAD,
    "pad_edge": False,
    "padding": (0, 1, 0, 0),
}


def console_summary(summary: dict[str, Any]) -> list[RichTable | str]:
    """What a run ends with on the terminal: per hospital its swarm model's accuracy against
    training alone, its contribution and reward; the baselines; the ledger audit's verdict."""
    nodes = summary["nodes"]
    local = (summary["baselines"].get("local_only") or {}).get("per_node", {})
    chained = any(n.get("reward_eth") is not None for n in nodes.values())
    private = any(n.get("epsilon") is not None for n in nodes.values())
    header = ["hospital", "rows", "accuracy", "AUC", "local only"]
    header += ["epsilon"] if private else []
    header += ["contribution", "reward (ETH)"] if chained else []
    title = f"per hospital ({_on(summary, 'own validation split', 'common test set')})"
    table = RichTable(*header, title=title, **TERMINAL_TABLE)
    for name, n in nodes.items():
        row = [name, str(n["rows"]), _fmt(n["accuracy"]), _fmt(n["auc"])]
        row.append(_fmt(local[name]["accuracy"]) if name in local else "—")
        if private:
            row.append(_fmt(n.get("epsilon"), 2))
        if chained:
            row += [_fmt(n.get("contribution"), 4), _fmt(n.get("reward_eth"), 3)]
        table.add_row(*row)
    baselines = _baseline_table(summary)
    means = RichTable(*baselines.header, title="means over hospitals", **TERMINAL_TABLE)
    for cells in baselines.rows:
        means.add_row(*cells)
    out: list[RichTable | str] = [table, means]
    if (privacy := summary.get("privacy")) and privacy["mean_mia_auc"] is not None:
        line = f"privacy audit: membership-inference attack AUC {privacy['mean_mia_auc']:.3f}"
        line += f" (calibrated {_fmt(privacy['mean_mia_auc_calibrated'])}; 0.5 = a coin toss)"
        if off := privacy.get("without_dp"):
            line += f"; without DP-SGD {_fmt(off['mean_mia_auc'])}, accuracy "
            line += _fmt(off["mean_accuracy"])
        out.append(line)
    if matrix := summary.get("cross_site"):
        checked = [r for r in matrix["nodes"].values() if r["digest"] is not None]
        line = f"cross-site evaluation: {len(checked)} of {len(matrix['nodes'])} hospitals' rows"
        if checked and all(r["digest_matches_row"] for r in checked):
            line += ", each matching its digest"
        if checked and any(r["on_chain"] is not None for r in checked):
            good = all(r["on_chain"] for r in checked)
            line += ", on chain" if good else ", [red]NOT all digests on chain[/red]"
        out.append(line + " (tables in the report)")
    if settled := summary.get("ledger"):
        verdict = "passed" if settled["audit_ok"] else f"FAILED: {settled['findings']}"
        again = f"; to repeat it: {settled['audit_command']}" if settled["audit_command"] else ""
        out.append(f"ledger audit {verdict}{again}")
    return out


def write_report(
    out: Path,
    summary: dict[str, Any],
    per_node: dict[str, list[dict[str, Any]]],
    consensus: list[dict[str, float]],
    seeds_summary: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write the plots, report.md and report.html into ``out``; return the files written."""
    if not per_node:
        raise ValueError("no node metrics to report: per_node is empty")
    out.mkdir(parents=True, exist_ok=True)
    nodes = summary["nodes"]
    plots = [
        Image(_accuracy_plot(out / "accuracy.png", summary, per_node), "accuracy per round"),
        Image(_consensus_plot(out / "consensus.png", summary, consensus), "consensus distance"),
    ]
    if summary.get("test") and summary["test"]["per_round"]:
        plots.append(Image(_test_plot(out / "test.png", summary), "test-set accuracy"))
    if any(n.get("contribution") is not None for n in nodes.values()):
        plots.append(Image(_contribution_plot(out / "contribution.png", nodes), "contribution"))
    if any(n.get("reward_eth") is not None for n in nodes.values()):
        plots.append(Image(_rewards_plot(out / "rewards.png", nodes), "rewards"))

    seeds = [s["seed"] for s in seeds_summary] if seeds_summary else [summary["seed"]]
    title = f"medswarm run: {summary['scenario']}"
    blocks: list[Block] = [
        Heading(title, 1),
        Paragraph(
            f"Scenario {summary['scenario']}; backend {summary['backend']}; "
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; "
            f"{summary['rounds']} rounds; {_fmt(summary.get('wall_seconds'), 1)} s wall-clock; "
            f"target accuracy {_fmt(summary.get('target_accuracy'))}."
        ),
        Heading("Hospitals"),
        Paragraph(
            f"Final merged model on {_on(summary, HOSPITAL_SPLIT)}, seed {summary['seed']} "
            "(the plots show this seed too). Rounds to target: the first round whose merged "
            "accuracy reached the target (— if never)."
        ),
        # Without a validation split the accuracy is the test set's already: no second column.
        _node_table(nodes, None if summary.get("evaluated_on") == "test" else summary.get("test")),
        Heading("Baselines"),
        Paragraph(
            f"Means over hospitals of metrics on {_on(summary, 'the same validation splits')}. "
            "Local only: each "
            "hospital alone. Centralized: one model on all training rows. FedAvg: a server "
            "averaging the hospitals' models weighted by rows; in one process its sites train "
            "one after another with no network, over libp2p each site is its own process, as "
            "the swarm's nodes are. Rounds 2 on: round 1 holds process start-up and torch's "
            "warm-up, so the pace is compared from the end of round 1."
        ),
        _baseline_table(summary),
        *_test_blocks(summary),
        *_cross_site_blocks(summary),
        *_heterogeneity(summary, seeds_summary),
        Heading("Faults and attacks"),
        Bullets(
            [f"fault: {f}" for f in summary.get("faults", [])]
            + [f"attack: {a}" for a in summary.get("attacks", [])]
            or ["none"]
        ),
        *_privacy(summary),
        *_ledger(summary.get("ledger")),
        Heading("Plots"),
        *plots,
        *_significance(seeds_summary),
    ]
    (out / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks, title), encoding="utf-8")
    return [p.path for p in plots] + [out / "report.md", out / "report.html"]
