"""`medswarm node ...`: set up, run and health-check one hospital node."""

import logging
from pathlib import Path
from typing import Annotated

import typer

from medswarm.cli.common import console, fail
from node.errors import NodeError

app = typer.Typer(help="Run one hospital node.", no_args_is_help=True)

# The options the node commands share.
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The node's TOML config.")]
OverridesOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a key: dotted.key=value.")
]
LogLevelOption = Annotated[
    str,
    typer.Option(
        envvar="MEDSWARM_LOG_LEVEL",
        help="Python log level; DEBUG also shows libp2p's dial messages.",
    ),
]


@app.command("init")
def node_init(
    folder: Annotated[Path, typer.Argument(help="Folder for node.toml and identity.key.")],
    name: Annotated[str, typer.Option(help="Readable node name.")] = "hospital",
    data: Annotated[str, typer.Option(help="This hospital's records.")] = "records.csv",
    schema: Annotated[str, typer.Option(help="The consortium's schema file.")] = "schema.toml",
    listen: Annotated[str, typer.Option(help="TCP multiaddr to listen on.")] = (
        "/ip4/0.0.0.0/tcp/4001"
    ),
    neighbour: Annotated[list[str] | None, typer.Option(help="Neighbour multiaddr.")] = None,
) -> None:
    """Write a commented example config and a fresh identity key (mode 0600)."""
    from node.init import init_node

    try:
        config_path, peer_id = init_node(folder, name, data, schema, listen, neighbour or [])
    except FileExistsError as exc:
        raise fail(str(exc)) from None
    console.print(f"wrote {config_path} and {folder / 'identity.key'} (mode 600)")
    console.print(f"peer id: [bold]{peer_id}[/bold]")
    console.print(f"neighbours dial you at: <your address>/tcp/<port>/p2p/{peer_id}")


@app.command("run")
def node_run(
    config: ConfigOption,
    overrides: OverridesOption = None,
    quiet: Annotated[bool, typer.Option(help="No live progress line.")] = False,
    log_level: LogLevelOption = "WARNING",
) -> None:
    """Run one node until its last round, with a live progress line."""
    import trio

    from gossip.errors import GossipError
    from gossip.logs import libp2p_verbosity
    from node.config import load_config
    from node.progress import RoundProgress
    from node.runner import NodeRunner

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    libp2p_verbosity(log_level)
    try:
        cfg = load_config(config, overrides)
        with RoundProgress(cfg.node.name, cfg.swarm.rounds, console, enabled=not quiet) as bar:
            runner = NodeRunner(cfg, on_round=bar.update)
            summary = trio.run(runner.run)
    except (NodeError, GossipError) as exc:
        raise fail(str(exc)) from None
    if "analytics" in summary:  # the config's [analytics] query, answered instead of training
        console.print(f"{cfg.node.name}: query answered; {cfg.node.output_dir / 'analytics.json'}")
        return
    final = summary["final"]
    if final:
        on = "test-set" if final.get("evaluated_on") == "test" else "validation"
        console.print(
            f"{cfg.node.name}: {summary['rounds']} rounds, merged {on} accuracy "
            f"{final['merged']['accuracy']:.3f}; outputs in {cfg.node.output_dir}"
        )


@app.command("health")
def node_health(
    config: ConfigOption,
    max_age: Annotated[
        float | None,
        typer.Option(help="Also require progress (metrics.jsonl, peer.json) this many s old."),
    ] = None,
) -> None:
    """Exit 0 if the node of this config is alive here: its libp2p port accepts TCP (and, with
    --max-age, it made progress lately); else print why and exit 1. For container health."""
    from node.config import load_config
    from node.health import check_health

    try:
        cfg = load_config(config)
    except NodeError as exc:
        raise fail(str(exc)) from None
    problems = check_health(cfg.node.listen, cfg.node.output_dir, max_age)
    for problem in problems:
        console.print(f"{cfg.node.name} unhealthy: {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{cfg.node.name} healthy", highlight=False)


@app.command("doctor")
def node_doctor(
    config: ConfigOption,
    overrides: OverridesOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the chain and for each neighbour.")
    ] = 5.0,
    log_level: LogLevelOption = "WARNING",
) -> None:
    """Check a node's set-up before it runs, in order: the config, the data and schema (a dry
    cleaning report), the key files' modes, the chain (reachable, the contract, this peer ID's
    membership) and each neighbour (dial, protocol). Prints each problem with its fix; exit
    status 1 if any check failed."""
    from gossip.logs import libp2p_verbosity
    from node.doctor import doctor

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    libp2p_verbosity(log_level)
    failed = 0
    for check in doctor(config, overrides, timeout):
        mark = (
            "[yellow]SKIP[/yellow]"
            if check.skipped
            else "[green] OK [/green]"
            if check.ok
            else "[red]FAIL[/red]"
        )
        console.print(f"{mark} {check.area:<9} {check.detail}", highlight=False)
        if not check.ok:
            failed += not check.skipped
            console.print(f"     {'fix:':<9} {check.fix}", highlight=False)
    if failed:
        console.print(f"[red]{failed} problem{'s' * (failed > 1)} found[/red]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/green]: start the node (`medswarm node run`)")
