"""Prometheus metrics, read from Redis at scrape time (so every API replica reports the same numbers).

- ``sjc_jobs{status}``: jobs per status (:mod:`sjc_service.indexes`).
- ``sjc_queue_depth``: jobs waiting for a worker; ``sjc_broker_messages``: Celery messages in the queue.
- ``sjc_job_duration_seconds``: histogram of finished jobs' run time (``finished_at - started_at``),
  counted when a job finishes.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from api.services import Services


class JobsCollector(Collector):
    """Collects job metrics from the service's Redis."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("sjc_jobs", "Jobs by status", labels=["status"])
        for status, n in self.services.jobs.indexes.counts_by_status().items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily("sjc_queue_depth", "Jobs queued for a worker", value=self.services.jobs.indexes.queue_length())
        depth = self.services.redis.llen(self.services.settings.queue_name)
        yield GaugeMetricFamily("sjc_broker_messages", "Celery messages waiting in the GPU queue", value=depth)
        buckets, total = self.services.jobs.indexes.duration_histogram()
        yield HistogramMetricFamily("sjc_job_duration_seconds", "Run time of finished jobs", buckets=buckets,
                                    sum_value=total)


def make_registry(services: Services) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(services))
    return registry
