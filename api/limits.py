"""Bounded request bodies: a pure ASGI middleware answering 413 problem+json past ``max_bytes``.

A declared ``Content-Length`` over the limit is refused before reading; a chunked body is read
up to the limit and refused as soon as it passes it. The buffered body is replayed to the app.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_JSON, TYPE_PREFIX


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` (default 64 KiB) with 413.

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest body accepted, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = 64 * 1024) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps({
            "type": TYPE_PREFIX + "payload-too-large", "title": "Payload Too Large", "status": 413,
            "detail": f"The request body is larger than {self.max_bytes} bytes.", "instance": scope.get("path", ""),
        }).encode()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            message: Any = await receive()
            return message

        await self.app(scope, replay, send)
