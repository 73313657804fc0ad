"""Liveness (``/healthz``: the process answers, no dependencies) and readiness (``/readyz``)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.problems import Problem, problem_response

router = APIRouter(tags=["health"])
log = logging.getLogger("sjc.api")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process runs; checks nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or the object store is unreachable"}})
def readyz(services: ServicesDep) -> JSONResponse:
    """200 when Redis answers PING and the bucket (or local store folder) is reachable; else 503."""
    checks: dict[str, str] = {}
    for name, ping in (("redis", services.redis.ping), ("store", services.store.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"unavailable: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    problem = Problem(503, f"Not ready: {down} unreachable.", slug="not-ready", title="Service not ready",
                      checks=checks, headers={"Retry-After": "5"})
    return problem_response(problem)
