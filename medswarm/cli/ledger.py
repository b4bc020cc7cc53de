"""`medswarm ledger ...`: the auditor's and admin's commands.

Every command takes `--chain` (a local backend of ledger.backends.CHAIN_BACKENDS, or an
http(s) URL) and, except deploy, `--contract ADDR`. With `--chain anvil --state FILE` each
command runs a managed Anvil that loads and saves FILE, so a local consortium persists between
commands; `serve` keeps one running for nodes. Keys come from `--key-file` (mode 0600: a hex key,
or a keystore `new-key` writes, unlocked with $MEDSWARM_KEY_PASSWORD or a prompt),
$MEDSWARM_ETH_KEY, or, on local dev chains only, `--dev-account N` (the public test mnemonic).
"""

import functools
import inspect
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3

from ledger.accounts import (
    KEY_ENV,
    PASSWORD_ENV,
    load_key_env,
    load_key_file,
    write_keystore,
)
from ledger.accounts import dev_account as dev_key
from ledger.audit import AuditReport, check_models, run_audit, write_audit
from ledger.backends import CHAIN_BACKENDS, Chain, connect
from ledger.contract import DeployConfig, Ledger
from ledger.errors import LedgerError, LedgerRevert
from ledger.privacy import (
    PrivacyError,
    decimal_delta,
    epsilon_to_fixed,
    exceeds,
    format_epsilon,
)
from ledger.scores import from_fixed
from ledger.views import Evaluation, MemberInfo, PrivacySpend

app = typer.Typer(
    help="Consortium ledger: deploy, register, fund, status, audit, explorer, withdraw.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

ChainOpt = Annotated[
    str, typer.Option("--chain", help=f"{' | '.join(CHAIN_BACKENDS)} | http(s)://host:port")
]
StateOpt = Annotated[
    Path | None, typer.Option("--state", help="Anvil state file, loaded and saved (anvil only).")
]
ContractOpt = Annotated[
    str, typer.Option("--contract", envvar="MEDSWARM_LEDGER_CONTRACT", help="Contract address.")
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Key file (hex key or keystore from new-key), mode 0600."),
]
DevOpt = Annotated[
    int | None,
    typer.Option("--dev-account", help="Dev account N of the test mnemonic (local chains)."),
]


def parse_wei(text: str) -> int:
    """'1000', '1.5ether', '2 gwei', '10wei' -> wei."""
    cleaned = text.strip().lower().replace(" ", "")
    for unit in ("ether", "eth", "gwei", "wei"):
        if cleaned.endswith(unit):
            number = cleaned[: -len(unit)]
            name = "ether" if unit == "eth" else unit
            break
    else:
        number, name = cleaned, "wei"
    try:
        return int(Web3.to_wei(Decimal(number), name))  # type: ignore[arg-type]
    except (InvalidOperation, ValueError) as exc:
        raise typer.BadParameter(f"not an amount: {text!r}") from exc


def _ask_password(prompt: str) -> str:
    return str(typer.prompt(prompt.rstrip(": "), hide_input=True, err=True))


def _account(chain: str, key_file: Path | None, dev: int | None) -> LocalAccount:
    if key_file is not None:
        # A keystore's password: $MEDSWARM_KEY_PASSWORD, else a prompt at a terminal.
        return load_key_file(key_file, ask=_ask_password if sys.stdin.isatty() else None)
    from_env = load_key_env()
    if from_env is not None:
        return from_env
    if dev is not None:
        if chain not in CHAIN_BACKENDS and "127.0.0.1" not in chain and "localhost" not in chain:
            raise LedgerError("--dev-account is only for local dev chains")
        return dev_key(dev)
    raise LedgerError(f"no key: pass --key-file, set ${KEY_ENV}, or --dev-account on a dev chain")


@contextmanager
def _session(chain: str, state: Path | None) -> Iterator[Chain]:
    if state is not None and chain != "anvil":
        raise LedgerError("--state only applies to --chain anvil")
    with connect(chain, state_path=state) as handle:
        yield handle


@contextmanager
def _errors() -> Iterator[None]:
    """Contract rejections and ledger errors: one line on stderr, exit status 2."""
    try:
        yield
    except LedgerRevert as exc:
        err.print(f"[red]rejected by the contract:[/red] {exc}")
        raise typer.Exit(2) from None
    except LedgerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@contextmanager
def _ledger(
    chain: str,
    state: Path | None,
    contract: str,
    key_file: Path | None = None,
    dev_account: int | None = None,
    *,
    read_only: bool = False,
) -> Iterator[Ledger]:
    """The contract on an open chain, as the command's account (none when `read_only`); ledger
    errors in the block become one line on stderr and exit status 2."""
    with _errors(), _session(chain, state) as c:
        account = None if read_only else _account(chain, key_file, dev_account)
        yield Ledger(c, contract, account)


def _checked_amount(text: str) -> str:
    """An amount option's check: a typo fails before any chain is started."""
    parse_wei(text)
    return text


# What a command acting as a member takes after its own options, in this order.
_MEMBER_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option)
    for name, option, default in [
        ("contract", ContractOpt, inspect.Parameter.empty),
        ("chain", ChainOpt, "anvil"),
        ("state", StateOpt, None),
        ("key_file", KeyFileOpt, None),
        ("dev_account", DevOpt, None),
    ]
]


def _as_member(command: Callable[..., None]) -> Callable[..., None]:
    """`command(ledger, **own options)` as a Typer command with its own options and then
    `_MEMBER_OPTIONS`; it runs on the contract as the command's account."""
    own = list(inspect.signature(command).parameters.values())[1:]

    @functools.wraps(command)
    def run(
        contract: str,
        chain: str,
        state: Path | None,
        key_file: Path | None,
        dev_account: int | None,
        **options: Any,
    ) -> None:
        with _ledger(chain, state, contract, key_file, dev_account) as ledger:
            command(ledger, **options)

    own_options = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    run.__signature__ = inspect.Signature([*own_options, *_MEMBER_OPTIONS])  # type: ignore[attr-defined]
    return run


@app.command()
def deploy(
    chain: ChainOpt = "anvil",
    state: StateOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevOpt = None,
    max_members: Annotated[int, typer.Option(help="Member cap (<= 100).")] = 16,
    rounds_per_epoch: Annotated[int, typer.Option(help="Rounds per reward epoch.")] = 10,
    min_reports: Annotated[int, typer.Option(help="Reports needed for a combined score.")] = 2,
    grace_rounds: Annotated[
        int, typer.Option(help="Rounds after an epoch before it can close.")
    ] = 1,
    reward_per_epoch: Annotated[
        str, typer.Option(help="Reward per epoch (wei or '1.5ether').")
    ] = "1ether",
    admin: Annotated[
        list[str] | None, typer.Option(help="Admin address (repeat); default: the deployer.")
    ] = None,
    close_timeout: Annotated[
        int, typer.Option(help="Seconds before an admin may close a stalled epoch.")
    ] = 7 * 24 * 3600,
) -> None:
    """Deploy the Consortium contract; prints its address."""
    with _errors(), _session(chain, state) as c:
        config = DeployConfig(
            max_members=max_members,
            rounds_per_epoch=rounds_per_epoch,
            min_reports=min_reports,
            grace_rounds=grace_rounds,
            reward_per_epoch=parse_wei(reward_per_epoch),
            admins=tuple(admin or ()),
            close_timeout=close_timeout,
        )
        ledger = Ledger.deploy(c, _account(chain, key_file, dev_account), config)
        err.print(f"deployed Consortium on {c.name} at block {ledger.deployed_at}")
        typer.echo(ledger.address)


@app.command("new-key")
def new_key(
    path: Annotated[Path, typer.Argument(help="The keystore file to create (e.g. keys/eth.key).")],
    scrypt_n: Annotated[
        int | None, typer.Option(hidden=True, help="scrypt's n (tests: a faster, weaker key).")
    ] = None,
) -> None:
    """Make a new Ethereum account for this hospital in an encrypted keystore (mode 0600);
    prints its address (give it to the consortium). The password comes from
    $MEDSWARM_KEY_PASSWORD, or is asked for twice."""
    from eth_account import Account

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt(
            f"password for {path} (or set ${PASSWORD_ENV})",
            hide_input=True,
            confirmation_prompt=True,
            err=True,
        )
    with _errors():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            account = Account.create()
            write_keystore(path, account, password, iterations=scrypt_n)
        except FileExistsError:
            raise LedgerError(f"{path} exists: a new key never replaces one") from None
    err.print(f"wrote {path} (encrypted keystore, mode 600); this account's address:")
    typer.echo(account.address)


@app.command()
@_as_member
def register(
    ledger: Ledger,
    member: Annotated[str, typer.Option(help="The hospital's Ethereum address.")],
    peer_id: Annotated[str, typer.Option("--peer-id", help="Its libp2p peer ID.")],
    name: Annotated[str, typer.Option(help="Its name (recorded in the event log).")],
    fund: Annotated[
        str | None,
        typer.Option(
            help="Also send the member this much (e.g. '0.5ether') from this account, for the "
            "gas of its writes.",
            callback=lambda text: text if text is None else _checked_amount(text),
        ),
    ] = None,
) -> None:
    """Register (or reactivate) a member hospital, and with --fund give it gas. Admins only."""
    result = ledger.register(member, peer_id, name)
    err.print(f"registered {member} ({peer_id}) in tx {result.tx_hash}")
    if fund is not None:
        wei = parse_wei(fund)
        sent = ledger.send_value(member, wei)
        balance = ledger.chain.w3.eth.get_balance(Web3.to_checksum_address(member))
        err.print(f"sent {member} {wei} wei in tx {sent.tx_hash}; its balance is {balance} wei")


@app.command()
@_as_member
def deactivate(
    ledger: Ledger,
    member: Annotated[str, typer.Option(help="The member's Ethereum address.")],
) -> None:
    """Deactivate a member: it can no longer write; what it is owed stays withdrawable."""
    ledger.deactivate(member)
    err.print(f"deactivated {member}")


@app.command()
@_as_member
def fund(
    ledger: Ledger,
    amount: Annotated[
        str, typer.Option(help="Amount (wei, or e.g. '2ether').", callback=_checked_amount)
    ],
) -> None:
    """Add native currency to the reward pool (anyone may)."""
    wei = parse_wei(amount)
    ledger.fund(wei)
    err.print(f"funded the pool with {wei} wei")


@app.command("set-reward")
@_as_member
def set_reward(
    ledger: Ledger,
    amount: Annotated[
        str,
        typer.Option(help="Reward per epoch (wei, or e.g. '1ether').", callback=_checked_amount),
    ],
) -> None:
    """Set the reward handed out per epoch. Admins only."""
    wei = parse_wei(amount)
    ledger.set_reward_per_epoch(wei)
    err.print(f"reward per epoch is now {wei} wei")


def _parse_epsilon(text: str) -> float | None:
    """'8', '0.5' -> the number; 'none' -> None (no maximum)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"not an epsilon: {text!r} (a number, or 'none')") from None
    if not 0 < value < float("inf"):
        raise typer.BadParameter(f"a maximum epsilon is positive and finite: {text!r}")
    try:
        epsilon_to_fixed(value)  # too large for the chain: fail before starting one
    except PrivacyError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _checked_epsilon(text: str) -> str:
    _parse_epsilon(text)
    return text


@app.command("set-max-epsilon")
@_as_member
def set_max_epsilon(
    ledger: Ledger,
    epsilon: Annotated[
        str,
        typer.Option(
            help="Each member's privacy budget for a run (epsilon), or 'none' for no maximum.",
            callback=_checked_epsilon,
        ),
    ],
) -> None:
    """Set the consortium's maximum epsilon; the audit flags reports above it. Admins only."""
    value = _parse_epsilon(epsilon)
    ledger.set_max_epsilon(value)
    err.print("no maximum epsilon" if value is None else f"maximum epsilon is now {value:g}")


@app.command("set-x25519-key")
@_as_member
def set_x25519_key(
    ledger: Ledger,
    x25519_key_file: Annotated[
        Path,
        typer.Option("--x25519-key-file", help="This node's X25519 masking key file (mode 0600)."),
    ],
) -> None:
    """Register (or rotate) this member's X25519 public key, for secure aggregation. The
    member itself sends it; only the public key leaves the file."""
    from gossip.errors import IdentityError
    from gossip.identity import load_x25519_key_file, x25519_public

    try:
        public = x25519_public(load_x25519_key_file(x25519_key_file))
    except IdentityError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    result = ledger.set_x25519_key(public)
    err.print(
        f"X25519 key {public.hex()[:16]}... set for {ledger.sender_address} in tx {result.tx_hash}"
    )


@app.command()
@_as_member
def finalize(
    ledger: Ledger,
    epoch: Annotated[int, typer.Option(help="The epoch to finalize (the next unfinalized one).")],
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="As an admin: do not wait for the reports still missing (none are coming).",
        ),
    ] = False,
) -> None:
    """Finalize a closed epoch: combine scores, credit rewards (anyone may, once every active
    member reported it or most reached the round window's end)."""
    result = ledger.finalize(epoch, wait_for_reports=not no_wait)
    err.print(f"finalized epoch {epoch} (gas {result.gas_used})")


@app.command("close-epoch")
@_as_member
def close_epoch(
    ledger: Ledger,
    epoch: Annotated[int, typer.Option(help="The stalled epoch (the next unfinalized one).")],
) -> None:
    """As an admin, close a stalled epoch after the timeout: no scores, no reward."""
    result = ledger.close_epoch(epoch)
    err.print(f"closed epoch {epoch} by admin (gas {result.gas_used})")


@app.command()
@_as_member
def withdraw(ledger: Ledger) -> None:
    """Withdraw what this member is owed, to itself."""
    info = ledger.member(ledger.sender_address)
    ledger.withdraw()
    err.print(f"withdrew {info.owed if info else '?'} wei to {ledger.sender_address}")


@app.command()
def status(
    contract: ContractOpt,
    chain: ChainOpt = "anvil",
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """The contract's configuration, pool and members, from its views."""
    with _ledger(chain, state, contract, read_only=True) as ledger:
        st = ledger.state()
        members = ledger.members()
        privacy = _by_member(ledger.privacy_spent(), members)
        evaluations = _by_member(ledger.evaluations(), members)
        if as_json:
            typer.echo(json.dumps(_status_json(st, members, privacy, evaluations), indent=2))
            return
        max_fixed = 0 if st.max_epsilon is None else epsilon_to_fixed(st.max_epsilon)
        limit = "no maximum" if not max_fixed else format_epsilon(max_fixed)
        table = Table(title=f"Consortium {st.address} on {ledger.chain.name}, max epsilon {limit}")
        table.add_column("setting")
        table.add_column("value", justify="right")
        for key, value in asdict(st).items():
            table.add_row(key, limit if key == "max_epsilon" else str(value))
        out.print(table)
        over = {a for a, h in privacy.items() if h and exceeds(h[-1].epsilon, max_fixed)}
        latest = {a: "0x" + h[-1].digest.hex() for a, h in evaluations.items() if h}
        out.print(_members_table(members, privacy, over, evaluations=latest))


class _OfMember(Protocol):
    @property
    def member(self) -> str: ...


_Member = TypeVar("_Member", bound=_OfMember)


def _by_member(items: list[_Member], members: list[MemberInfo]) -> dict[str, list[_Member]]:
    """Each member's events (privacy spends, evaluations) in chain order, [] for none."""
    found: dict[str, list[_Member]] = {m.address: [] for m in members}
    for item in items:
        found.setdefault(item.member, []).append(item)
    return found


def _status_json(
    st: Any,
    members: list[MemberInfo],
    privacy: dict[str, list[PrivacySpend]],
    evaluations: dict[str, list[Evaluation]],
) -> dict[str, Any]:
    rows = []
    for m in members:
        row = asdict(m) | {"x25519_key": "0x" + m.x25519_key.hex() if m.x25519_key else None}
        row["privacy"] = [
            {"epoch": p.epoch, "epsilon": p.epsilon, "delta": p.delta}  # fixed point
            for p in privacy.get(m.address, [])
        ]
        # Cross-site evaluation digests, oldest first; the last is the one the contract keeps.
        row["evaluations"] = [
            {"digest": "0x" + e.digest.hex(), "block": e.block, "tx_hash": e.tx_hash}
            for e in evaluations.get(m.address, [])
        ]
        rows.append(row)
    return {"state": asdict(st), "members": rows}


STATUS_EPOCHS = 6  # status shows a member's last few epochs' epsilon; the audit all of them


def _members_table(
    members: list[Any],
    privacy: dict[str, list[PrivacySpend]] | None = None,
    over_max: set[str] | None = None,
    shown: int | None = STATUS_EPOCHS,
    evaluations: dict[str, str] | None = None,
) -> Table:
    """Members (MemberInfo from the views, or the audit's MemberRecord) with their X25519
    key's and latest cross-site evaluation digest's first bytes (`evaluations`: address ->
    0x-hex digest; else the record's own) and, given their privacy history, the latest epsilon
    (and delta) and the epsilon of each of the last `shown` epochs (None: all)."""
    table = Table(title="Members")
    columns = ["#", "address", "peer id", "name", "active", "next round", "owed", "paid"]
    columns += ["x25519", "evaluation"]
    columns += ["latest epsilon", "epsilon by epoch"] if privacy is not None else []
    for col in columns:
        table.add_column(col)
    for m in members:
        row = [
            str(m.index), m.address, m.peer_id, getattr(m, "name", ""),
            "yes" if m.active else "no", str(m.next_round), str(m.owed), str(m.paid),
            _key_prefix(m.x25519_key),
            _key_prefix((evaluations or {}).get(m.address, getattr(m, "evaluation", None))),
        ]  # fmt: skip
        if privacy is not None:
            history = privacy.get(m.address, [])
            row += _budget_cells(history, m.address in (over_max or set()), shown)
        table.add_row(*row)
    return table


def _key_prefix(key: bytes | str | None) -> str:
    if key is None:
        return "-"
    text = key.hex() if isinstance(key, bytes) else key.removeprefix("0x")
    return text[:8] + "..."


def _budget_cells(history: list[PrivacySpend], over: bool, shown: int | None) -> list[str]:
    """[latest epsilon (flagged when past the maximum), 'epoch:epsilon ...']."""
    if not history:
        return ["-", "-"]
    last = history[-1]
    latest = format_epsilon(last.epsilon)
    if last.delta:
        latest += f" (delta {decimal_delta(last.delta)})"
    if over:
        latest = f"[red]{latest} OVER MAX[/red]"
    recent = history if shown is None else history[-shown:]
    cut = "... " if len(recent) < len(history) else ""
    return [latest, cut + " ".join(f"{p.epoch}:{format_epsilon(p.epsilon)}" for p in recent)]


@app.command()
def audit(
    contract: ContractOpt,
    chain: ChainOpt = "anvil",
    state: StateOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where JSON and CSV go.")] = Path(
        "ledger-audit"
    ),
    models: Annotated[
        Path | None,
        typer.Option(help="Check DIR/<address|peer-id>/round-<r>.safetensors digests."),
    ] = None,
) -> None:
    """Rebuild the state from events, check it against the views; exit 1 on any mismatch."""
    with _ledger(chain, state, contract, read_only=True) as ledger:
        report = run_audit(ledger)
        if models is not None:
            check_models(report, models)
    _print_audit(report)
    write_audit(report, out_dir)
    err.print(f"wrote {out_dir}/audit.json and CSV files")
    if not report.ok:
        raise typer.Exit(1)


def _print_audit(report: AuditReport) -> None:
    over = set(report.members_over_max)
    out.print(_members_table(report.members, report.privacy_by_member(), over, shown=None))
    names = {m.address: m.name for m in report.members}
    per_round = report.commitments_per_round()
    summary = Table(title=f"Audit of {report.contract} up to block {report.to_block}")
    summary.add_column("item")
    summary.add_column("value", justify="right")
    rows = {
        "events replayed": report.events,
        "commitments": len(report.commitments),
        "rounds with commitments": len(per_round),
        "epochs finalized": report.epochs_finalized,
        "epochs closed by admin (no reward)": ", ".join(
            f"{c.epoch} by {c.by} at block {c.block}" for c in report.epochs_closed_by_admin
        )
        or "-",
        "late reports (logged, not combined)": ", ".join(
            f"{names[r.member]} epoch {r.epoch}" for r in report.late_reports
        )
        or "-",
        "funded (wei)": report.funded,
        "owed (wei)": report.owed,
        "paid (wei)": report.paid,
        "pool (wei)": report.pool,
        "balance (wei)": report.balance,
        "model files checked": report.models_checked,
        "evaluation digests": len(report.evaluations),
        "max epsilon": format_epsilon(report.max_epsilon) if report.max_epsilon else "none",
        "max epsilon changes": ", ".join(
            f"{format_epsilon(c.max_epsilon) if c.max_epsilon else 'none'} at block {c.block}"
            for c in report.max_epsilon_history
        )
        or "-",
        "members over max epsilon": ", ".join(f"{names[a]} ({a})" for a in report.members_over_max)
        or "-",
        "findings": len(report.findings),
    }
    for key, value in rows.items():
        summary.add_row(key, str(value))
    out.print(summary)
    if report.scores:
        scores = Table(title="Combined scores (last 20)")
        for col in ("epoch", "member", "score", "reports", "reward (wei)"):
            scores.add_column(col)
        for s in report.scores[-20:]:
            scores.add_row(
                str(s.epoch), s.member, f"{from_fixed(s.score):.6f}", str(s.reports), str(s.reward)
            )
        out.print(scores)
    if report.findings:
        bad = Table(title="[red]Mismatches[/red]")
        for col in ("check", "subject", "expected (events/files)", "actual (contract)"):
            bad.add_column(col)
        for f in report.findings:
            bad.add_row(f.check, f.subject, f.expected, f.actual)
        out.print(bad)
    else:
        out.print("[green]OK: the events, the rules and the contract's views agree.[/green]")


@app.command()
def explorer(
    contract: ContractOpt,
    chain: ChainOpt = "anvil",
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Anvil state file, loaded (never written; anvil only)."),
    ] = None,
    models: Annotated[
        Path | None,
        typer.Option(help="Check DIR/<address|peer-id>/round-<r>.safetensors digests."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8060,
) -> None:
    """Serve a read-only page of the audit on 127.0.0.1:PORT (members, epochs, commitments,
    scores, rewards, the verdict; each figure with its event's block and tx; CSV and JSON
    downloads). It audits again when the chain moves. It never signs: no key options."""
    from medswarm.web.explorer import AuditSource, create_app
    from medswarm.web.serve import HOST, port_in_use
    from medswarm.web.serve import serve as serve_app

    if port_in_use(port):
        err.print(f"[red]error:[/red] port {port} on 127.0.0.1 is in use: choose another --port")
        raise typer.Exit(2)
    with _errors(), _explorer_chain(chain, state) as c:
        source = AuditSource(Ledger(c, contract), models)
        first = source.current()  # an unreachable chain or no contract fails here, clearly
        verdict = "clean" if first.doc["ok"] else f"{len(first.doc['findings'])} findings"
        err.print(f"audited {contract} up to block {first.block}: {verdict}")
        typer.echo(f"http://{HOST}:{port}/")
        sys.stdout.flush()
        serve_app(create_app(source), port)


@contextmanager
def _explorer_chain(chain: str, state: Path | None) -> Iterator[Chain]:
    """The explorer's chain: with --state, a managed Anvil that loads FILE and never saves it
    back (`--load-state`)."""
    if state is None:
        with connect(chain) as handle:
            yield handle
        return
    if chain != "anvil":
        raise LedgerError("--state only applies to --chain anvil")
    if not state.is_file():
        raise LedgerError(f"no Anvil state file at {state}")
    from ledger.backends.anvil import connect_anvil

    with connect_anvil(extra_args=["--load-state", str(state)]) as handle:
        yield handle


@app.command()
def serve(
    state: StateOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8545,
) -> None:
    """Run a managed Anvil in the foreground for nodes to use; Ctrl-C stops it (saving state)."""
    from ledger.backends.anvil import AnvilProcess

    with _errors():
        proc = AnvilProcess(state_path=state, port=port)
        proc.start()
        typer.echo(proc.url)
        sys.stdout.flush()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while proc.running and not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            proc.stop()


@app.command("compile", hidden=True)
def compile_contracts() -> None:
    """Compile contracts/ and write the committed artifacts (after editing a contract)."""
    from ledger.artifacts import REPO_ROOT
    from ledger.compile import write_artifacts

    with _errors():
        for path in write_artifacts():
            typer.echo(path.relative_to(REPO_ROOT))
