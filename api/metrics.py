"""Prometheus metrics, read from Redis at scrape time (so every API replica reports the same numbers).

- ``sjc_jobs{status}``: jobs per status (JobStore's counters).
- ``sjc_queue_depth``: jobs waiting for a worker; ``sjc_broker_messages``: Celery messages in the queue.
- ``sjc_job_duration_seconds{quantile}`` (+ ``_window_count``): run time (``finished_at - started_at``)
  of the newest ``per_owner`` finished jobs of each owner; a sliding window, hence gauges.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from api.services import Services
from sjc_service.jobs import PREFIX
from sjc_service.schemas import TERMINAL

QUANTILES = (0.5, 0.9, 0.99)


class JobsCollector(Collector):
    """Collects job metrics from the service's Redis.

    Args:
        services: the app's clients.
        per_owner: finished jobs per owner in the duration window.
    """

    def __init__(self, services: Services, per_owner: int = 100) -> None:
        self.services, self.per_owner = services, per_owner

    def durations(self) -> list[float]:
        redis, out = self.services.redis, []
        for key in redis.scan_iter(match=f"{PREFIX}owner:*:jobs", count=500):
            ids = redis.zrevrange(key, 0, self.per_owner - 1)
            for rec in self.services.jobs.get_many(ids):
                if rec is not None and rec.status in TERMINAL and rec.started_at and rec.finished_at:
                    out.append((rec.finished_at - rec.started_at).total_seconds())
        return out

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("sjc_jobs", "Jobs by status", labels=["status"])
        for status, n in self.services.jobs.counts_by_status().items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily("sjc_queue_depth", "Jobs queued for a worker", value=self.services.jobs.queue_length())
        depth = self.services.redis.llen(self.services.settings.queue_name)
        yield GaugeMetricFamily("sjc_broker_messages", "Celery messages waiting in the GPU queue", value=depth)
        values = sorted(self.durations())
        dur = GaugeMetricFamily("sjc_job_duration_seconds", "Run time of recent finished jobs", labels=["quantile"])
        if len(values) >= 2:
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            for q in QUANTILES:
                dur.add_metric([str(q)], cuts[round(q * 100) - 1])
        elif values:
            for q in QUANTILES:
                dur.add_metric([str(q)], values[0])
        yield dur
        yield GaugeMetricFamily("sjc_job_duration_window_count", "Finished jobs in the duration window",
                                value=len(values))


def make_registry(services: Services) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(services))
    return registry
