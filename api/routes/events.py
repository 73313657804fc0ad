"""Server-sent events of a job, read from its Redis stream.

Every event carries ``id:`` (the stream id), so a client that reconnects with ``Last-Event-ID``
(or ``?last_event_id=``) gets exactly the events it missed. An idle stream gets a comment line
every ``sse_heartbeat_s`` seconds; the response ends after the job's ``done`` event (or at once
when the job had finished and its stream holds nothing newer). A Redis outage during the stream is
ridden out (a read retried every ``REDIS_RETRY_S`` for up to ``REDIS_RETRIES`` times, with comment
lines meanwhile); past that the response ends and the client reconnects with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import redis

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import CurrentOwner, ServicesDep
from api.ownership import owned_job
from api.problems import field_error, problem_responses
from api.services import Services
from sjc_service.schemas import TERMINAL
from sjc_service.validation import EVENT_ID_PATTERN, check_event_id
from sjc_service.views import job_view

router = APIRouter(prefix="/jobs", tags=["events"])
# declared in the OpenAPI document; checked in the route, so the 422 names the header as clients spell it
EVENT_ID_SCHEMA = {"pattern": EVENT_ID_PATTERN}
EVENT_ID_HELP = "resume after this event id: '0' or '<ms>-<seq>', both numbers below 2**64"
MAX_BLOCK_S = 5.0
MAX_STREAMS = 1000
REDIS_RETRY_S = 1.0
REDIS_RETRIES = 30
log = logging.getLogger("sjc.api")
T = TypeVar("T")


def format_event(event_id: str | None, event: str, data: Any) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def event_lines(services: Services, job_id: str, last_id: str) -> AsyncIterator[str]:
    """The SSE text of ``job_id`` after ``last_id``.

    The blocking Redis reads run in threads of their own limiter, so open streams never take the
    threads that the API's other (synchronous) routes run in.
    """
    if services.sse_limiter is None:
        services.sse_limiter = anyio.CapacityLimiter(MAX_STREAMS)
    limiter = services.sse_limiter

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    heartbeat = services.sse_heartbeat_s
    yield "retry: 3000\n\n"
    last_sent = time.monotonic()
    failures = 0
    while True:
        try:
            wait_s = max(0.01, min(MAX_BLOCK_S, heartbeat - (time.monotonic() - last_sent)))
            batch = await call(partial(services.events.read, job_id, last_id, block_ms=int(wait_s * 1000)))
            failures = 0
            for event_id, event, data in batch:
                last_id = event_id
                yield format_event(event_id, event, data)
                last_sent = time.monotonic()
                if event == "done":
                    return
            if not batch:
                record = await call(services.jobs.get, job_id)
                if record is None:
                    return
                if record.status in TERMINAL and not await call(services.events.read, job_id, last_id):
                    yield format_event(None, "done", job_view(record).model_dump(mode="json"))
                    return
                if time.monotonic() - last_sent >= heartbeat:
                    yield f": heartbeat {int(time.time())}\n\n"
                    last_sent = time.monotonic()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            failures += 1
            if failures == 1:
                log.warning("event stream of job %s: Redis unavailable (%s); retrying", job_id, exc)
            if failures > REDIS_RETRIES:
                return  # the client reconnects with Last-Event-ID
            yield f": waiting for the event store ({failures})\n\n"
            last_sent = time.monotonic()
            await anyio.sleep(REDIS_RETRY_S)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "state, progress, preview and done events"},
               **problem_responses(401, 404, 422)},
)
def job_events(
    job_id: str,
    services: ServicesDep,
    owner: CurrentOwner,
    last_event_id: Annotated[str | None, Header(max_length=64, json_schema_extra=EVENT_ID_SCHEMA,
                                                description=EVENT_ID_HELP)] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id", max_length=64,
                                                     json_schema_extra=EVENT_ID_SCHEMA, description=EVENT_ID_HELP)] = None,
) -> StreamingResponse:
    """Stream the job's events; reconnect with ``Last-Event-ID`` to resume where you left off.

    An event id is ``0`` or ``<ms>-<seq>`` with both numbers below 2**64; anything else is a 422
    before the stream starts."""
    last_id = last_event_id or last_event_id_query or "0"
    try:
        check_event_id(last_id)
    except ValueError as exc:
        raise field_error("Last-Event-ID", str(exc)) from None
    owned_job(services.jobs, job_id, owner)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(event_lines(services, job_id, last_id), media_type="text/event-stream", headers=headers)
