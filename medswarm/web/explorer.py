"""The ledger explorer: a read-only page of `ledger audit`'s report for auditors.

`AuditSource` runs the audit (ledger.audit.run_audit) on the chain's latest block and runs it
again when the chain moves; the page (static/explorer.*) polls the head and redraws. Every
table is served as JSON (the lists of the audit's audit.json, through the same serializer) and
as CSV (the audit's CSV files, byte for byte); `/api/tx/<hash>` decodes the contract's events of
one transaction, so every figure on the page leads to the event that set it. Nothing here
signs: the Ledger has no account, and every route is GET.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from web3.exceptions import TransactionNotFound

from ledger.audit import (
    TABLE_FIELDS,
    audit_document,
    audit_tables,
    check_models,
    run_audit,
    table_csv,
)
from ledger.contract import Ledger
from ledger.errors import LedgerError
from ledger.tx import transport_guard
from medswarm.web.serve import chart_js_route

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {
    "explorer.js": "text/javascript",
    "explorer.css": "text/css",
}
_TX_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Snapshot:
    """One audit: the block it ran to, audit.json's content and the tables' rows (CSV form)."""

    block: int
    doc: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]

    def json_rows(self, table: str) -> list[dict[str, Any]]:
        """A table as audit.json has it (its list of that name); commitments, which audit.json
        only counts, as their records."""
        listed = self.doc.get(table)
        return listed if isinstance(listed, list) else self.tables[table]


class AuditSource:
    """The audit of one contract, run again when the chain's head moves. Thread-safe: one
    lock around every chain access (the embedded chain is not safe across threads)."""

    def __init__(self, ledger: Ledger, models: Path | None = None) -> None:
        if ledger.account is not None:
            raise LedgerError("the explorer reads only: give it a Ledger without an account")
        self.ledger = ledger
        self.models = models
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    def head(self) -> int:
        with self._lock:
            return self._head()

    def _head(self) -> int:
        w3 = self.ledger.chain.w3
        return int(transport_guard(self.ledger.chain.name, lambda: w3.eth.block_number))

    def current(self) -> Snapshot:
        """The audit at the latest block (run now if the chain moved since the last one)."""
        with self._lock:
            head = self._head()
            if self._snapshot is None or self._snapshot.block != head:
                report = run_audit(self.ledger, to_block=head)
                if self.models is not None:
                    check_models(report, self.models)
                doc = audit_document(report)
                self._snapshot = Snapshot(head, doc, audit_tables(report, doc))
            return self._snapshot

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """The contract's events in one transaction, decoded (None: no such transaction)."""
        w3 = self.ledger.chain.w3
        with self._lock:
            try:
                receipt = transport_guard(
                    self.ledger.chain.name,
                    lambda: w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
                )
            except TransactionNotFound:
                return None
        events = []
        for log in receipt["logs"]:
            if str(log["address"]).lower() != self.ledger.address.lower():
                continue
            event = self.ledger.events.decode(log)
            if event is not None:
                args = {k: _plain(v) for k, v in event.args.items()}
                events.append({"name": event.name, "log_index": event.log_index, "args": args})
        return {
            "tx_hash": HexBytes(receipt["transactionHash"]).to_0x_hex(),
            "block": int(receipt["blockNumber"]),
            "from": receipt["from"],
            "to": receipt["to"],
            "status": int(receipt["status"]),
            "events": events,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _error(exc: Exception, status: int = 503) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status)


def create_app(source: AuditSource) -> Starlette:
    """The explorer's routes, every one GET (and HEAD)."""

    def page(_request: Request) -> FileResponse:
        return FileResponse(STATIC / "explorer.html", media_type="text/html")

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PAGE_FILES:
            return Response("not found", status_code=404)
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

    def head(_request: Request) -> JSONResponse:
        try:
            return JSONResponse({"block": source.head()})
        except LedgerError as exc:
            return _error(exc)

    def snapshot() -> Snapshot | JSONResponse:
        try:
            return source.current()
        except LedgerError as exc:
            return _error(exc)

    def whole(_request: Request) -> JSONResponse:
        """The page's data in one answer: audit.json and every table, from one audit."""
        snap = snapshot()
        if isinstance(snap, JSONResponse):
            return snap
        return JSONResponse({"block": snap.block, "audit": snap.doc, "tables": snap.tables})

    def audit_json(_request: Request) -> JSONResponse:
        snap = snapshot()
        return snap if isinstance(snap, JSONResponse) else JSONResponse(snap.doc)

    def table(request: Request) -> Response:
        name, kind = request.path_params["name"], request.path_params["kind"]
        if name not in TABLE_FIELDS or kind not in ("json", "csv"):
            known = ", ".join(TABLE_FIELDS)
            return _error(LedgerError(f"no table {name}.{kind}: tables are {known}"), 404)
        snap = snapshot()
        if isinstance(snap, JSONResponse):
            return snap
        headers = {"Content-Disposition": f'attachment; filename="{name}.{kind}"'}
        if kind == "json":
            return JSONResponse(snap.json_rows(name), headers=headers)
        return Response(table_csv(name, snap.tables[name]), media_type="text/csv", headers=headers)

    def transaction(request: Request) -> JSONResponse:
        tx_hash = request.path_params["tx_hash"]
        if not _TX_RE.match(tx_hash):
            return _error(LedgerError(f"not a transaction hash: {tx_hash!r}"), 400)
        try:
            found = source.transaction(tx_hash)
        except LedgerError as exc:
            return _error(exc)
        if found is None:
            return _error(LedgerError(f"no transaction {tx_hash} on this chain"), 404)
        return JSONResponse(found)

    routes = [
        Route("/", page),
        chart_js_route(),
        Route("/static/{name}", static),
        Route("/api/head", head),
        Route("/api/explorer.json", whole),
        Route("/api/audit.json", audit_json),
        Route("/api/tx/{tx_hash}", transaction),
        Route("/api/{name}.{kind}", table),
    ]
    return Starlette(routes=routes)
