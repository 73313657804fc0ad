"""Dependency aliases for route signatures (``def get_job(jobs: JobStoreDep, owner: CurrentOwner)``).

Each resolves to a member of the app's :class:`~api.services.Services`, so tests get their own
clients simply by building an app with their own :class:`Settings`.
"""

from __future__ import annotations

from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends, Request

from api.security import current_owner
from api.services import Services
from sjc_service.events import EventStream
from sjc_service.jobs import JobStore
from sjc_service.settings import Settings
from sjc_service.store import ObjectStore


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_redis(services: ServicesDep) -> redis.Redis:
    return services.redis


def get_job_store(services: ServicesDep) -> JobStore:
    return services.jobs


def get_events(services: ServicesDep) -> EventStream:
    return services.events


def get_store(services: ServicesDep) -> ObjectStore:
    return services.store


def get_celery(services: ServicesDep) -> Celery:
    return services.celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
EventsDep = Annotated[EventStream, Depends(get_events)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
CurrentOwner = Annotated[str, Depends(current_owner)]
