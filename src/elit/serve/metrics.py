"""Prometheus metrics of one server (its own registry, so that several apps can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)


class ServeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("elit_requests", "POST /v1/images requests by model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("elit_request_latency_seconds", "arrival to answer of successful image requests",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("elit_queue_wait_seconds", "arrival to the start of the request's batch",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("elit_batch_compute_seconds", "compute time of one batch", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_images = Histogram("elit_batch_images", "images per batch", ["model"],
                                      buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.budgets = Counter("elit_chosen_budget_images", "images generated, by the budget used and whether "
                               "the server chose it (deadline) or the client did (fixed)",
                               ["model", "budget", "steps", "mode"], registry=r)
        self.queue_depth = Gauge("elit_queue_depth_images", "images waiting in the queue", ["model"], registry=r)
        self.predicted_wait = Gauge("elit_predicted_wait_seconds", "predicted wait of a request arriving now",
                                    ["model"], registry=r)
        self.correction = Gauge("elit_cost_model_correction", "measured / calibrated batch time (moving)",
                                ["model"], registry=r)

    def watch(self, service) -> None:
        """Read the live gauges from `service` whenever /metrics is scraped."""
        sched = service.scheduler
        self.queue_depth.labels(service.name).set_function(lambda: sum(j.images for j in list(sched.queue)))
        self.predicted_wait.labels(service.name).set_function(sched.predicted_wait)
        self.correction.labels(service.name).set_function(lambda: service.cost.correction)

    def batch_done(self, name: str, jobs, option, waits, compute) -> None:
        images = sum(j.images for j in jobs)
        mode = "deadline" if jobs[0].deadline is not None else "fixed"
        self.budgets.labels(name, str(option.budget), str(option.steps), mode).inc(images)
        self.compute.labels(name).observe(compute)
        self.batch_images.labels(name).observe(images)
        for w in waits:
            self.queue_wait.labels(name).observe(w)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
