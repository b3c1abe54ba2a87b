"""`elit serve --ray --replicas 2`: the same app as a Ray Serve deployment with two CPU replicas on this
machine. Both replicas answer, and every image equals `elit.sample`'s. Slow (Ray starts a local cluster)."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="pip install 'elit-diffusion[ray]' (scripts/setup.sh does)")
import httpx  # noqa: E402

import elit  # noqa: E402
from test_serve_app import STEPS, expected, free_port, pixels, tiny_model  # noqa: E402

pytestmark = pytest.mark.slow


def test_two_ray_replicas_serve_the_same_images(tmp_path):
    model = tiny_model()
    elit.save_pretrained(model, tmp_path / "tiny")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}     # a local one-machine cluster
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "elit", "serve", "--ray", "--replicas", "2", "--threads", "1",
                             "--model", str(tmp_path / "tiny"), "--port", str(port), "--steps", str(STEPS),
                             "--max-batch", "4", "--max-images", "4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        stop = time.monotonic() + 240
        while time.monotonic() < stop:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)

        async def burst():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(url + "/v1/images", json={"seed": s, "budget": 2})
                                              for s in range(24)))
        replicas = set()
        for _ in range(5):          # the router spreads load by queue length: a few bursts reach both
            answers = asyncio.run(burst())
            assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
            replicas |= {r.headers["x-elit-replica"] for r in answers}
            if len(replicas) == 2:
                break
        assert len(replicas) == 2
        want = expected(model, list(range(24)), budget=2)
        for seed, r in enumerate(answers):
            got = pixels(r.content).astype(int)
            # batches differ between replicas and runs: equal up to a rounding-boundary level
            assert np.abs(got - want[seed]).max() <= 1 and (got == want[seed]).mean() > 0.99
        bad = httpx.post(url + "/v1/images", json={"budget": 99}, timeout=30)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "budget"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
