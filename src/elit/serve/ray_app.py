"""`elit serve --ray --replicas N`: the same app as a Ray Serve deployment, one model copy and one worker
(scheduler) per replica. Ray Serve's proxy listens on --host:--port and spreads requests over the
replicas; each replica batches and picks budgets for the requests it holds. Locally `ray.init()` starts
a one-machine cluster; on a cluster, start Ray first (`ray start --head` / `--address`) and set
RAY_ADDRESS, and the replicas land on its machines.

Requests are not held back in Ray's router: a replica accepts up to --max-queue requests at once, so
that they wait in its own scheduler, where the deadline-aware choice (and the 503) happen.
"""
from __future__ import annotations

import os
import signal
import time

from ray import serve


@serve.ingress()
class ElitReplica:
    """One replica: loads the models, calibrates, starts the workers; its app is `create_app`'s."""

    def __init__(self, models: list, options, device: str, threads: int | None, api_key: str | None):
        import torch

        from elit.serve.service import build_services
        torch.set_num_threads(threads or 1)
        self.api_key = api_key
        self.services = build_services(models, options, device)
        for service in self.services:
            service.scheduler.start()

    def __serve_build_asgi_app__(self):
        from elit.serve.app import create_app
        return create_app(self.services, api_key=self.api_key, manage_workers=False)

    def __del__(self):
        for service in getattr(self, "services", []):
            service.scheduler.stop(timeout=5)


def serve_with_ray(models: list, options, device: str, *, host: str, port: int, replicas: int,
                   threads: int | None, api_key: str | None, max_queue: int) -> int:
    """Serve `models` ([(name, folder)]) with `options` (ServeOptions) as `replicas` Ray Serve replicas."""
    import ray
    # Serve's proxy must pass a readiness check in 5 s and health checks in 10 s; on a machine whose
    # cores are busy (the replicas' own sampling included) it misses them, Serve kills it in a loop and
    # start() fails. A minute each unless the user chose: set before the local cluster starts, whose
    # processes inherit the environment.
    for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        os.environ.setdefault(name, "60")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, logging_level="warning")
    try:
        serve.start(http_options={"host": host, "port": port})
        deployment = serve.deployment(ElitReplica, name="elit", num_replicas=replicas, max_ongoing_requests=max_queue,
                                      ray_actor_options={"num_cpus": threads or 1})
        serve.run(deployment.bind(models, options, device, threads, api_key), name="elit", route_prefix="/",
                  blocking=False)
        print(f"elit serve: Ray Serve, {replicas} replicas: http://{host}:{port}/", flush=True)

        def stop(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, stop)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        serve.shutdown()
        ray.shutdown()
