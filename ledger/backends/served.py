"""The embedded (eth-tester) chain served over JSON-RPC on 127.0.0.1, so that node processes
can use a chain that lives inside the simulator: no Anvil or Node.js needed.

Requests go through the embedded Web3's own middleware (wire format in, wire format out) and
are answered one at a time: eth-tester is not thread-safe. Reverts are answered as Anvil
answers them (code 3, revert data in `data`), so clients decode them as on any other chain.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from web3 import Web3

from ledger.backends.base import Chain
from ledger.backends.embedded import connect_embedded
from ledger.backends.rpc import http_web3
from ledger.revert import revert_data

MAX_REQUEST_BYTES = 8 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, w3: Web3) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.w3 = w3
        self.lock = threading.Lock()

    def answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "invalid request")
        rid = request.get("id")
        try:
            with self.lock:
                result = self.w3.manager.request_blocking(
                    request["method"], request.get("params") or []
                )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON-RPC error
            data = revert_data(exc)
            if isinstance(data, bytes):
                return _error(rid, 3, "execution reverted", "0x" + data.hex())
            return _error(rid, -32000, str(exc))
        return {"jsonrpc": "2.0", "id": rid, "result": json.loads(Web3.to_json(result))}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_REQUEST_BYTES:
            self.send_error(413 if length else 411)
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            reply: Any = _error(None, -32700, "parse error")
        else:
            answer = self.server.answer
            reply = [answer(r) for r in body] if isinstance(body, list) else answer(body)
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per request would drown the simulator's output


def _error(rid: Any, code: int, message: str, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def connect_served_embedded() -> Chain:
    """A fresh embedded chain served at the returned Chain's `url`. The Chain's own client
    talks to it through that URL too, so every caller goes through the server's lock."""
    embedded = connect_embedded()
    server = _Server(embedded.w3)
    threading.Thread(target=server.serve_forever, daemon=True, name="embedded-rpc").start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def close() -> None:
        server.shutdown()
        server.server_close()

    return Chain(
        name="embedded",
        w3=http_web3(url, timeout=30.0),
        dev_accounts=embedded.dev_accounts,
        url=url,
        process=embedded.process,
        _closer=close,
    )
