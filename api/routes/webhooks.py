"""Webhooks: the caller's signing secret, and the delivery attempts of a job's webhook.

A job asks for a webhook with ``webhook_url`` (and ``webhook_events``) in ``POST /v1/jobs``;
:func:`check_webhook` refuses a target the service may not call (422 naming ``webhook_url``) and
:func:`register_webhook` records it once the job exists. See :mod:`sjc_service.webhooks`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CurrentOwner, ServicesDep
from api.ownership import owned_job
from api.problems import field_error, problem_responses
from api.services import Services
from sjc_service import webhooks
from sjc_service.schemas import JobCreate

router = APIRouter(tags=["webhooks"])


class WebhookSecret(BaseModel):
    """The ``whsec_`` secret that signs every webhook of your jobs (Standard Webhooks)."""

    secret: str = Field(description="verify deliveries with it, e.g. standardwebhooks.Webhook(secret).verify(...)")


class WebhookDeliveries(BaseModel):
    """The job's webhook and every delivery attempt so far, oldest first."""

    job_id: str
    url: str | None
    events: list[str]
    deliveries: list[dict[str, Any]]


def check_webhook(body: JobCreate, services: Services) -> None:
    """422 naming ``webhook_url`` when the service may not call it."""
    if body.webhook_url is None:
        return
    try:
        webhooks.check_target(body.webhook_url, services.settings.webhook_allow_private_targets)
    except webhooks.TargetRefused as exc:
        raise field_error("webhook_url", str(exc)) from None


def register_webhook(services: Services, owner: str, job_id: str, body: JobCreate) -> None:
    """Remember the new job's webhook (nothing when it has none)."""
    if body.webhook_url is not None:
        webhooks.register(services.redis, job_id, owner, body.webhook_url, list(body.webhook_events))


@router.get("/webhook-secret", response_model=WebhookSecret, responses=problem_responses(401))
def get_webhook_secret(services: ServicesDep, owner: CurrentOwner) -> WebhookSecret:
    """Your webhook signing secret (made on first request; the same for all your jobs)."""
    return WebhookSecret(secret=webhooks.secret_for(services.redis, owner))


@router.post("/webhook-secret/rotate", response_model=WebhookSecret, responses=problem_responses(401))
def rotate_webhook_secret(services: ServicesDep, owner: CurrentOwner) -> WebhookSecret:
    """A new signing secret; deliveries from now on are signed with it."""
    return WebhookSecret(secret=webhooks.rotate_secret(services.redis, owner))


@router.get("/jobs/{job_id}/webhook-deliveries", response_model=WebhookDeliveries,
            responses=problem_responses(401, 404))
def list_deliveries(job_id: str, services: ServicesDep, owner: CurrentOwner) -> WebhookDeliveries:
    """Each attempt: ``webhook_id``, ``event``, ``attempt``, ``at``, ``status_code``, ``error``, ``delivered``,
    ``next_attempt_in_s`` (``null``: no further attempt)."""
    owned_job(services.jobs, job_id, owner)
    hook = webhooks.webhook_of(services.redis, job_id)
    return WebhookDeliveries(job_id=job_id, url=hook["url"] if hook else None,
                             events=hook["events"] if hook else [],
                             deliveries=webhooks.deliveries(services.redis, job_id))
