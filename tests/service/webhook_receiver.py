"""A real HTTP receiver of webhooks on 127.0.0.1 that verifies signatures with ``standardwebhooks``.

It answers 500 to the first ``fail_first`` requests (counted per ``webhook-id``), then 204; every
request is recorded with whether its signature verified.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: dict[str, Any]
    verified: bool
    answered: int


@dataclass
class Receiver:
    """Start with :meth:`start`; ``url`` is where to send; ``requests`` what came."""

    secret: str | None = None
    fail_first: int = 0
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.answered < 300]

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                from standardwebhooks.webhooks import Webhook, WebhookVerificationError

                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret or "").verify(raw, headers)
                    verified = True
                except (WebhookVerificationError, Exception):  # noqa: BLE001 - any failure: not verified
                    verified = False
                webhook_id = headers.get("webhook-id", "")
                seen = sum(r.webhook_id == webhook_id for r in receiver.requests)
                status = 500 if seen < receiver.fail_first else 204
                receiver.requests.append(Received(webhook_id, headers, json.loads(raw or b"{}"), verified, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
