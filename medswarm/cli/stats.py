"""`medswarm stats QUERY --config node.toml`: answer a federated-analytics query with the other
members (each hospital runs the same command with the same query file)."""

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medswarm.cli.common import console, fail, write_json
from node.errors import NodeError

app = typer.Typer()


@app.command("stats")
def stats(
    query: Annotated[Path, typer.Argument(help="The query file (TOML): where, stats, glm.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="This node's TOML config.")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: dotted.key=value.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the answer as JSON here.")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Write the models' coefficients as CSV here.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "WARNING",
) -> None:
    """Statistics and regression models over every member's records, exactly.

    Computed from exact secure sums: no server, and no hospital's own figures leave it in
    clear. Every member runs the same command with the same query file."""
    import trio

    from gossip.errors import GossipError
    from node.config import load_config, load_query
    from node.runner import NodeRunner

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        asked = load_query(query)
        cfg = load_config(config, overrides)
        cfg = cfg.model_copy(update={"analytics": asked})
        with console.status(f"{cfg.node.name}: answering {query.name} with the swarm"):
            result = trio.run(NodeRunner(cfg).run)["analytics"]["answer"]
    except (NodeError, GossipError) as exc:
        raise fail(str(exc)) from None
    show(result)
    if json_out is not None:
        write_json(json_out, result)
    if csv_out is not None:
        write_csv(csv_out, result)


def show(result: dict[str, Any]) -> None:
    from node.analytics import tables

    console.print(
        f"{result['rows']} rows from {result['sites']} hospitals "
        f"({result['secure_sums']} secure sums over {result['members']} members)"
    )
    if rows := tables.stats_rows(result):
        _print("Columns", tables.STATS_HEADER, rows)
    if rows := tables.level_rows(result):
        _print("Levels", ["column", "counts", "missing"], rows)
    for table in result.get("stats", {}).get("crosstabs", []):
        text = tables.crosstab_text(table, result)
        _print(tables.crosstab_test(table), text[0], text[1:])
    for model in result.get("glm", []):
        title = f"{model['formula']}  ({model['family']})"
        if "error" in model:
            console.print(f"[bold]{title}[/bold]: [red]{model['error']}[/red]")
            continue
        rows = [[r[0], *map(tables.number, r[1:])] for r in tables.coefficient_rows(model)]
        _print(title, tables.GLM_HEADER[2:], rows)
        console.print(
            f"  n {model['n']} at {model['sites']} sites, deviance "
            f"{tables.number(model['deviance'])}, AIC {tables.number(model['aic'])}, "
            f"{model['iterations']} iterations" + ("" if model["converged"] else ", NOT converged")
        )
        for warning in model["warnings"]:
            console.print(f"  [yellow]warning:[/yellow] {warning}")


def _print(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def write_csv(path: Path, result: dict[str, Any]) -> None:
    import csv

    from node.analytics import tables

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(tables.GLM_HEADER)
        writer.writerows(tables.glm_rows(result))
    console.print(f"wrote {path}")
