"""A Server-Sent Events parser (the WHATWG ``text/event-stream`` rules), fed line by line.

Rules followed: a blank line dispatches the event; lines starting with ``:`` are comments
(heartbeats); ``field: value`` loses one leading space of the value; several ``data:`` lines join
with ``\\n``; ``id:`` sets the last event id once its event is complete (kept for later events: the value
a reconnect sends as ``Last-Event-ID``);
``event:`` names the type (default ``"message"``); ``retry:`` sets the reconnection delay; an event
with no data is not dispatched; an unterminated event at end of stream is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event: unpacks as ``(id, event, data)``.

    ``data`` is the decoded JSON value when the data is JSON, else the raw string.
    """

    id: str | None
    event: str
    data: Any


@dataclass
class SSEParser:
    """Incremental parser; :meth:`feed` one line (without its line ending) at a time.

    Attributes:
        last_event_id: the id of the last event seen (what a reconnect sends as ``Last-Event-ID``).
        retry_ms: the server's reconnection delay from a ``retry:`` field, if any.
    """

    last_event_id: str | None = None
    retry_ms: int | None = None
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id_buffer: str | None = None

    def __post_init__(self) -> None:
        self._id_buffer = self.last_event_id

    def feed(self, line: str) -> SSEEvent | None:
        """Process one line; return the event it completes, if any."""
        line = line.rstrip("\r\n")
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment / heartbeat
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id_buffer  # an id counts once its event is complete
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        text = "\n".join(data)
        return SSEEvent(self.last_event_id, event or "message", _decode(text))


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_sse(lines: Iterable[str], parser: SSEParser | None = None) -> Iterator[SSEEvent]:
    """Yield the events of a stream given as lines (e.g. ``httpx.Response.iter_lines()``)."""
    parser = parser or SSEParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
