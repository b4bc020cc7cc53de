"""An analytics run's results: every node's answer (the same at each: one summary), the nodes
that stopped and why, the traffic; its report (tables, a forest plot of the coefficients)."""

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

import node.analytics.tables as tables
from sim.report import (
    Block,
    Bullets,
    Heading,
    Image,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)


def collect_analytics(
    folder: Path, names: list[str], scenario: str, seed: int, backend: str, **extra: Any
) -> dict[str, Any]:
    """summary.json of an analytics run: the answer the nodes agreed on (None if any two
    differ, or none answered), each node's outcome."""
    outcomes: dict[str, Any] = {}
    for n in names:
        path = folder / "nodes" / n / "out" / "analytics.json"
        outcomes[n] = json.loads(path.read_text()) if path.exists() else {"error": "no answer"}
    # The nodes know each other by peer ID: the simulator knows their names too.
    for n in names:
        peer = folder / "nodes" / n / "out" / "peer.json"
        peer_id = json.loads(peer.read_text())["peer_id"] if peer.exists() else None
        for o in outcomes.values():
            if peer_id and o.get("error"):
                o["error"] = o["error"].replace(peer_id, f"{n} ({peer_id})")
    answered = {n: o["answer"] for n, o in outcomes.items() if "answer" in o}
    distinct = {json.dumps(a, sort_keys=True) for a in answered.values()}
    summary = {
        "kind": "analytics",
        "scenario": scenario,
        "seed": seed,
        "backend": backend,
        "answer": next(iter(answered.values())) if len(distinct) == 1 else None,
        "agreed": len(distinct) == 1,
        "nodes": {
            n: {
                "answered": "answer" in o,
                "error": o.get("error"),
                "seconds": o.get("seconds"),
                "bytes_per_node": (o["bytes_sent"] + o["bytes_received"])
                if "answer" in o
                else None,
            }
            for n, o in outcomes.items()
        },
        **extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def console_lines(summary: dict[str, Any]) -> list[RichTable | str]:
    """The terminal's end of an analytics run: the models' coefficients, or why it stopped."""
    answer = summary["answer"]
    if answer is None:
        errors = {n: o["error"] for n, o in summary["nodes"].items() if o["error"]}
        why = "; ".join(f"{n}: {e}" for n, e in errors.items()) or "the nodes' answers differ"
        return [f"no answer released: {why}"]
    out: list[RichTable | str] = [
        f"answer from {answer['rows']} rows at {answer['sites']} hospitals, the same at every "
        f"node ({answer['secure_sums']} secure sums)"
    ]
    if rows := tables.stats_rows(answer):
        table = RichTable(*tables.STATS_HEADER, title="columns")
        for row in rows:
            table.add_row(*row)
        out.append(table)
    for model in answer.get("glm", []):
        if "error" in model:
            out.append(f"{model['formula']} ({model['family']}): {model['error']}")
            continue
        table = RichTable(*tables.GLM_HEADER[2:], title=f"{model['formula']} ({model['family']})")
        for row in tables.coefficient_rows(model):
            table.add_row(row[0], *(tables.number(v, 4) for v in row[1:]))
        out.append(table)
    return out


def write_analytics_report(out: Path, summary: dict[str, Any]) -> list[Path]:
    """report.md and report.html (with forest.png when a model was fitted)."""
    title = f"medswarm analytics: {summary['scenario']}"
    answer = summary["answer"]
    blocks: list[Block] = [
        Heading(title, 1),
        Paragraph(
            f"Scenario {summary['scenario']}; backend {summary['backend']}; seed "
            f"{summary['seed']}. Every figure comes from exact secure sums over the hospitals: "
            "no server, and no hospital's own figures left it in clear."
        ),
        Heading("Hospitals"),
        Table(
            ["hospital", "answered", "seconds", "kB sent + received", "error"],
            [
                [
                    n,
                    "yes" if o["answered"] else "no",
                    _num(o["seconds"], 3),
                    _num(o["bytes_per_node"] / 1000 if o["bytes_per_node"] else None, 4),
                    o["error"] or "",
                ]
                for n, o in summary["nodes"].items()
            ],  # fmt: skip
        ),
    ]
    paths = []
    if answer is None:
        blocks.append(Paragraph("No answer was released (see the errors above)."))
    else:
        blocks += _answer_blocks(answer)
        if any("coefficients" in m for m in answer.get("glm", [])):
            paths.append(forest_plot(out / "forest.png", answer))
            blocks += [Heading("Forest plot"), Image(paths[-1], "coefficients with 95% CI")]
    (out / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks, title), encoding="utf-8")
    return [*paths, out / "report.md", out / "report.html"]


def _answer_blocks(answer: dict[str, Any]) -> list[Block]:
    rule = answer["disclosure"]
    where = [_where_text(w) for w in answer["where"]] or ["all rows"]
    blocks: list[Block] = [
        Heading("Query"),
        Bullets(
            [
                f"rows: {', '.join(where)}: {answer['rows']} rows at {answer['sites']} hospitals",
                f"disclosure: cells under {rule['min_cell']} suppressed (shown as "
                f"<{rule['min_cell']}), at least {rule['min_sites']} contributing hospitals",
                answer["outcome"],
            ]
        ),  # fmt: skip
    ]
    if rows := tables.stats_rows(answer):
        blocks += [Heading("Columns"), Table(tables.STATS_HEADER, rows)]
    if rows := tables.level_rows(answer):
        blocks += [Heading("Levels"), Table(["column", "counts", "missing"], rows)]
    for table in answer.get("stats", {}).get("crosstabs", []):
        text = tables.crosstab_text(table, answer)
        blocks += [
            Heading(f"{table['rows']} by {table['columns']}", 3),
            Table(text[0], text[1:]),
            Paragraph(tables.crosstab_test(table)),
        ]
    for model in answer.get("glm", []):
        blocks.append(Heading(f"{model['formula']} ({model['family']})", 3))
        if "error" in model:
            blocks.append(Paragraph(f"Not fitted: {model['error']}"))
            continue
        rows = [[r[0], *map(tables.number, r[1:])] for r in tables.coefficient_rows(model)]
        blocks += [
            Table(tables.GLM_HEADER[2:], rows),
            Paragraph(
                f"n {model['n']} at {model['sites']} sites; deviance "
                f"{tables.number(model['deviance'])}; null deviance "
                f"{tables.number(model['null_deviance'])}; AIC {tables.number(model['aic'])}; "
                f"scale {tables.number(model['scale'])}; {model['iterations']} iterations"
                + ("" if model["converged"] else " (did not converge)")
            ),
            *(Paragraph(f"Warning: {w}") for w in model["warnings"]),
        ]
    return blocks


def forest_plot(path: Path, answer: dict[str, Any]) -> Path:
    """Each model's coefficients (intercept left out) with their 95% confidence intervals, a
    panel per model: their scales differ (log odds, log rates, units of the outcome)."""
    from matplotlib.figure import Figure

    panels = []
    for model in answer.get("glm", []):
        if "coefficients" in model:
            rows = [r for r in tables.coefficient_rows(model)
                    if r[0] != "Intercept" and None not in (r[1], r[5], r[6])]  # fmt: skip
            if rows:
                panels.append((model, rows))
    heights = [len(rows) + 1 for _, rows in panels]
    fig = Figure(figsize=(7, 0.32 * sum(heights) + 0.6 * len(panels)))
    axes = fig.subplots(len(panels), 1, height_ratios=heights, squeeze=False)[:, 0]
    for ax, (model, rows) in zip(axes, panels, strict=True):
        for y, row in enumerate(reversed(rows)):
            ax.plot([row[5], row[6]], [y, y], color="C0")
            ax.plot([row[1]], [y], "o", color="C0")
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=8)
        ax.set_title(f"{model['formula']}  ({model['family']})", fontsize=9)
    axes[-1].set_xlabel("coefficient (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _where_text(flt: dict[str, Any]) -> str:
    low, high = flt.get("min"), flt.get("max")
    parts = [f"{flt['column']} >= {low:g}" if low is not None else ""]
    parts.append(f"{flt['column']} <= {high:g}" if high is not None else "")
    return " and ".join(p for p in parts if p)


def _num(value: float | None, digits: int) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}g}")
    )
