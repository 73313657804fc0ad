"""The FastAPI app: ``create_app(settings)`` builds one; ``app`` is the one uvicorn serves.

``uvicorn api.main:app`` reads its settings from ``SJC_*`` environment variables. Everything
is under ``/v1`` except ``/healthz``, ``/readyz`` and ``/metrics``; every error is problem+json.
This module (and all of ``api/``) imports no torch: the API image carries no deep-learning stack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from api.limits import BodySizeLimit
from api.metrics import make_registry
from api.problems import Problem, install_problem_handlers, problem_response, problem_responses
from api.rate_limits import RateLimitHeaders, rate_limited
from api.routes import artifacts, deletion, events, files, health, jobs, metrics, models, usage, webhooks
from api.routes import page
from api.services import Services
from sjc_service.settings import Settings, get_settings

log = logging.getLogger("sjc.api")
MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None, *, sse_heartbeat_s: float | None = None, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """Build the API.

    Args:
        settings: service settings (default: :func:`get_settings`, from the environment).
        sse_heartbeat_s: seconds between heartbeat comments on idle event streams
            (default: ``settings.sse_heartbeat_s``).
        max_body_bytes: largest request body accepted (413 beyond).
    """
    settings = settings or get_settings()
    services = Services.from_settings(settings, sse_heartbeat_s=sse_heartbeat_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services.ensure_keys()
        except redis.RedisError as exc:  # retried on the first authenticated request
            log.warning("Redis unavailable at start-up (%s); API keys will be loaded later", exc)
        threading.Thread(target=services.ensure_bucket, name="sjc-ensure-bucket", daemon=True).start()
        page.allow_page_origin(services)
        yield
        services.close()

    app = FastAPI(
        title="SJC text-to-3D",
        version="1.0.0",
        description="Queue text-to-3D jobs (Score Jacobian Chaining), follow their progress, fetch the results.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.metrics_registry = make_registry(services)
    install_problem_handlers(app)

    async def on_redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("Redis error on %s: %s", request.url.path, exc)
        problem = Problem(503, "A backing service is unavailable; try again shortly.", slug="dependency-unavailable",
                          headers={"Retry-After": "5"})
        return problem_response(problem, request)

    app.add_exception_handler(redis.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.TimeoutError, on_redis_down)

    v1 = APIRouter(prefix="/v1")
    for module in (jobs, deletion, events, artifacts, models, webhooks, usage):  # per-key request rate
        v1.include_router(module.router, dependencies=[Depends(rate_limited)], responses=problem_responses(429))
    v1.include_router(files.router)  # signed links, no key: not rate limited per key
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(page.router)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app


app = create_app()
