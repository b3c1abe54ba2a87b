"""`elit serve --ray --replicas N`: the same app as a Ray Serve deployment, one model copy and one worker
(scheduler) per replica. Ray Serve's proxy listens on --host:--port and spreads requests over the
replicas; each replica batches and picks budgets for the requests it holds. Locally `ray.init()` starts
a one-machine cluster; on a cluster, start Ray first (`ray start --head` / `--address`) and set
RAY_ADDRESS, and the replicas land on its machines.

Requests are not held back in Ray's router: a replica accepts up to --max-queue requests at once, so
that they wait in its own scheduler, where the deadline-aware choice (and the 503) happen.
"""
from __future__ import annotations

import argparse
import os
import signal
import time

from ray import serve


@serve.ingress()
class ElitReplica:
    """One replica: loads the models, calibrates, starts the workers; its app is `create_app`'s."""

    def __init__(self, options: dict, device: str):
        import torch

        from elit.cli.serve import build_services
        args = argparse.Namespace(**options)
        torch.set_num_threads(args.threads or 1)
        self.api_key = args.api_key
        self.services = build_services(args, device)
        for service in self.services:
            service.scheduler.start()

    def __serve_build_asgi_app__(self):
        from elit.serve.app import create_app
        return create_app(self.services, api_key=self.api_key, manage_workers=False)

    def __del__(self):
        for service in getattr(self, "services", []):
            service.scheduler.stop(timeout=5)


def serve_with_ray(args, device: str) -> int:
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
        serve.start(http_options={"host": args.host, "port": args.port})
        options = {k: v for k, v in vars(args).items() if k != "command"}
        deployment = serve.deployment(ElitReplica, name="elit", num_replicas=args.replicas,
                                      max_ongoing_requests=args.max_queue,
                                      ray_actor_options={"num_cpus": args.threads or 1})
        serve.run(deployment.bind(options, device), name="elit", route_prefix="/", blocking=False)
        print(f"elit serve: Ray Serve, {args.replicas} replicas: http://{args.host}:{args.port}/", flush=True)

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
