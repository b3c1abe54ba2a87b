"""`elit serve`'s HTTP app on a tiny model: images equal `elit.sample`'s, batching does not change an image,
every bad request is a 4xx naming its field (and the server goes on), caps hold, 503 with Retry-After,
/v1/models, /metrics, and the `elit serve` command on a real socket."""
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="pip install 'elit-diffusion[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

import elit  # noqa: E402
from elit.serve.app import create_app  # noqa: E402
from elit.serve.costmodel import CostModel  # noqa: E402
from elit.serve.requests import Limits  # noqa: E402
from elit.serve.service import ModelService  # noqa: E402
from elit.viz import to_uint8  # noqa: E402

STEPS = 3
KEY = "s3cret"


def tiny_model():
    model = elit.create_model("ELIT-DiT-S/4", input_size=32, in_channels=1, num_classes=10, patch_size=4,
                              hidden_size=32, depth=3, num_heads=4, head_depth=1, tail_depth=1).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():   # random weights: a fresh model's zero output layers would draw flat images
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def service(model, **kw):
    limits = kw.pop("limits", Limits(max_images=4, max_batch_images=8, max_queue_images=12, max_steps=10))
    return ModelService("tiny", model, limits=limits, default_steps=STEPS, cost=CostModel(0.001, 0.01), **kw)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app([service(model)], api_key=KEY), headers={"X-API-Key": KEY}) as c:
        yield c


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def expected(model, seeds, **kw):
    return to_uint8(elit.sample(model, seeds, steps=STEPS, **kw))[..., 0]


def test_an_image_is_what_elit_sample_draws_and_the_headers_say_how(client, model):
    r = client.post("/v1/images", json={"seed": 7, "label": 2, "budget": 2, "guidance": "ccfg", "scale": 0.5})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(r.content), expected(model, [7], labels=2, budget=2, guidance="ccfg", scale=0.5)[0])
    h = r.headers
    assert (h["x-elit-budget"], h["x-elit-steps"], h["x-elit-guidance"], h["x-elit-scale"], h["x-elit-weak-budget"],
            h["x-elit-labels"]) == ("2", str(STEPS), "ccfg", "0.5", "1", "2")   # weak budget: the lowest
    from elit.sampling import sampling_gflops
    assert float(h["x-elit-gflops-per-image"]) == pytest.approx(
        sampling_gflops(model.config, STEPS, 2, "ccfg", scale=0.5), abs=1e-3)
    assert float(h["x-elit-queue-wait-ms"]) >= 0 and float(h["x-elit-compute-ms"]) > 0
    # JSON with base64 PNGs, several images, a class by name
    r = client.post("/v1/images", json={"seed": 3, "num_images": 2, "label": "3", "format": "json"})
    body = r.json()
    assert r.status_code == 200 and body["seeds"] == [3, 4] and body["labels"] == [3, 3]
    got = np.stack([pixels(base64.b64decode(b)) for b in body["images"]])
    assert np.array_equal(got, expected(model, [3, 4], labels=3))


def test_batching_does_not_change_an_image(model):
    """Four requests wait in the queue (worker paused), run as one batch, and each equals its solo image."""
    svc = service(model)
    app = create_app([svc], manage_workers=False)
    with TestClient(app) as c:
        solo = {}
        for seed in (11, 12, 13, 14):
            t = threading.Thread(target=lambda s=seed: solo.__setitem__(s, c.post("/v1/images", json={"seed": s})))
            t.start()
            while len(svc.scheduler.queue) < 1:
                time.sleep(0.01)
            svc.scheduler.step()
            t.join()
        batched = {}
        threads = [threading.Thread(target=lambda s=seed: batched.__setitem__(s, c.post("/v1/images", json={"seed": s})))
                   for seed in (11, 12, 13, 14)]
        for t in threads:
            t.start()
        while len(svc.scheduler.queue) < 4:
            time.sleep(0.01)
        assert svc.scheduler.step()
        for t in threads:
            t.join()
    for seed in (11, 12, 13, 14):
        assert solo[seed].headers["x-elit-batch-images"] == "1" and batched[seed].headers["x-elit-batch-images"] == "4"
        a, b = pixels(solo[seed].content).astype(int), pixels(batched[seed].content).astype(int)
        # Per-seed noise: the same image. Batched matmuls may sum in another order, which can move a
        # pixel that sits on a rounding boundary by one level, never more.
        assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99
    assert len({solo[s].content for s in solo}) == 4    # different seeds, different images


BAD = [
    ({"budget": 99}, 422, "budget"),
    ({"budget": 0}, 422, "budget"),
    ({"budget": "half"}, 422, "budget"),
    ({"budget": 2, "deadline_ms": 100}, 422, "deadline_ms"),
    ({"deadline_ms": -5}, 422, "deadline_ms"),
    ({"steps": 11}, 422, "steps"),
    ({"steps": 0}, 422, "steps"),
    ({"seed": -1}, 422, "seed"),
    ({"seed": 10**30}, 422, "seed"),
    ({"seed": 2**32 - 1, "num_images": 2}, 422, "seed"),
    ({"seed": "7"}, 422, "seed"),
    ({"label": 10}, 422, "label"),
    ({"label": "Sandal"}, 422, "label"),
    ({"num_images": 5}, 422, "num_images"),
    ({"num_images": 10**9}, 422, "num_images"),
    ({"guidance": "pag"}, 422, "guidance"),
    ({"guidance": "ag", "scale": 1, "budget": 1}, 422, "weak_budget"),
    ({"weak_budget": 9, "guidance": "ccfg", "scale": 1}, 422, "weak_budget"),
    ({"prompt": "a cat"}, 422, "prompt"),
    ({"model": "other"}, 422, "model"),
    ({"colour": "red"}, 422, "colour"),
    ([1, 2], 400, "body"),
    # one typed schema: no string or boolean read as a number, no Inf, a scale that cannot overflow
    ({"deadline_ms": "500"}, 422, "deadline_ms"),
    ({"deadline_ms": "1e3"}, 422, "deadline_ms"),
    ({"deadline_ms": True}, 422, "deadline_ms"),
    ({"guidance": "cfg", "scale": "2"}, 422, "scale"),
    ({"guidance": "cfg", "scale": True}, 422, "scale"),
    ({"guidance": "cfg", "scale": 1e300}, 422, "scale"),
    ({"guidance": "cfg", "scale": 1e308}, 422, "scale"),
    ({"steps": 2.0}, 422, "steps"),
    ({"num_images": True}, 422, "num_images"),
    ({"model": 3}, 422, "model"),
    ({"weak_budget": 1}, 422, "weak_budget"),                         # no weak pass runs with guidance none
    ({"weak_budget": 1, "deadline_ms": 60_000}, 422, "weak_budget"),
]


@pytest.mark.parametrize("body, status, field", BAD, ids=[str(b) for b, _, _ in BAD])
def test_a_bad_request_is_a_4xx_naming_its_field(client, body, status, field):
    r = client.post("/v1/images", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["message"]


def test_malformed_oversized_and_unauthorised_requests_then_the_server_still_serves(client, model):
    for content in (b"{not json", b'{"seed": NaN}', b"\xff\xfe"):
        r = client.post("/v1/images", content=content)
        assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    big = b'{"seed": 1, "label": "' + b"x" * 9000 + b'"}'
    r = client.post("/v1/images", content=big)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"

    def chunks():   # no Content-Length: the cap is enforced while reading
        for _ in range(20):
            yield b" " * 1000
    r = client.post("/v1/images", content=chunks())
    assert r.status_code == 413
    for headers in ({"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}):
        r = client.post("/v1/images", json={"seed": 1}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["field"] == "api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
    r = client.post("/v1/images", json={"seed": 1}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and np.array_equal(pixels(r.content), expected(model, [1])[0])
    assert client.get("/nowhere").json()["error"]["message"] == "Not Found"


def test_deep_infinite_or_repeated_json_is_a_4xx_not_a_500(client):
    for content, status in ((b"[" * 4000 + b"]" * 4000, 400), (b'{"seed": ' + b"[" * 4000 + b"]" * 4000 + b"}", 400),
                            (b'{"label": "[[[[[[[[[[[[[[[[[["}', 422), (b'{"deadline_ms": 1e400}', 422),
                            (b'{"seed": 1, "seed": 2}', 400)):   # a repeated field: which one counts is refused
        r = client.post("/v1/images", content=content)
        assert r.status_code == status, (content[:20], r.text)
    assert client.post("/v1/images", json={"seed": 1}).status_code == 200


def test_the_weak_budget_header_names_only_a_weak_pass_that_ran(client):
    h = client.post("/v1/images", json={"seed": 1, "guidance": "ccfg", "scale": 0.5}).headers
    assert h["x-elit-weak-budget"] == "1"
    for body in ({"seed": 1}, {"seed": 1, "guidance": "ccfg", "scale": 0}, {"seed": 1, "guidance": "cfg", "scale": 1}):
        assert "x-elit-weak-budget" not in client.post("/v1/images", json=body).headers, body


def test_caps_hold_and_work_out_of_reach_gets_503_with_retry_after(model):
    svc = service(model, limits=Limits(max_images=4, max_batch_images=4, max_queue_images=6, max_steps=10))
    with TestClient(create_app([svc], manage_workers=False)) as c:
        threads = [threading.Thread(target=c.post, args=("/v1/images",), kwargs={"json": {"seed": s, "num_images": 3}})
                   for s in (0, 10)]
        for t in threads:
            t.start()
        while len(svc.scheduler.queue) < 2:
            time.sleep(0.01)
        r = c.post("/v1/images", json={"seed": 20})         # 6 images queued: the queue cap
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue is full" in r.text
        while svc.scheduler.step():
            pass
        for t in threads:
            t.join()
        r = c.post("/v1/images", json={"seed": 1, "deadline_ms": 0.001})
        assert r.status_code == 503 and "deadline cannot be met" in r.json()["error"]["message"]

        def step_when_queued():
            while not svc.scheduler.queue:
                time.sleep(0.01)
            svc.scheduler.step()
        stepper = threading.Thread(target=step_when_queued)
        stepper.start()
        r = c.post("/v1/images", json={"seed": 1, "deadline_ms": 60_000})
        stepper.join()
        assert r.status_code == 200     # refusals left nothing behind
    # Two batches of 3 (never 6 in one forward: the batch cap is 4), then the last request.
    assert [b["images"] for b in svc.scheduler.status()["recent"]] == [3, 3, 1]


def test_models_status_health_and_metrics(client, model):
    from elit.cost import analytic_gflops
    info = client.get("/v1/models").json()["models"][0]
    assert [row["budget"] for row in info["budgets"]] == model.budgets
    assert all(row["gflops_per_forward"] == pytest.approx(analytic_gflops(model.config, row["budget"]), abs=1e-4)
               for row in info["budgets"])
    seconds = [row["predicted_seconds"]["none"] for row in info["budgets"]]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]      # cheaper budgets are predicted faster
    assert len(info["classes"]) == 10 and info["defaults"]["steps"] == STEPS
    assert info["limits"]["max_images"] == 4
    client.post("/v1/images", json={"seed": 5, "deadline_ms": 60_000})
    client.post("/v1/images", json={"budget": 99})
    status = client.get("/v1/status").json()["models"]["tiny"]
    assert status["queued_images"] == 0 and status["recent"][-1]["budget"] == model.budgets[-1]
    assert client.get("/healthz").json()["status"] == "ok"
    text = client.get("/metrics").text
    for line in ('elit_requests_total{model="tiny",status="422"}', 'elit_requests_total{model="tiny",status="200"}',
                 f'elit_chosen_budget_images_total{{budget="{model.budgets[-1]}",mode="deadline",model="tiny",steps="{STEPS}"}}',
                 'elit_queue_depth_images{model="tiny"} 0.0', "elit_request_latency_seconds_bucket"):
        assert line in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_elit_serve_command_answers_on_loopback(tmp_path, model):
    import httpx
    elit.save_pretrained(model, tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "elit", "serve", "--model", str(tmp_path / "tiny"), "--port",
                             str(port), "--steps", str(STEPS), "--threads", "1", "--max-batch", "4", "--max-images", "4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read()
        r = httpx.post(f"{url}/v1/images", json={"seed": 4, "budget": 1}, timeout=60)
        assert r.status_code == 200 and np.array_equal(pixels(r.content), expected(model, [4], budget=1)[0])
        assert "text/html" in httpx.get(url + "/").headers["content-type"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "cost model" in out and f"http://127.0.0.1:{port}/" in out


def test_an_unconditional_model_refuses_labels_and_class_guidance():
    model = elit.create_model("ELIT-DiT-S/4", input_size=32, in_channels=1, num_classes=0, patch_size=4,
                              hidden_size=32, depth=3, num_heads=4, head_depth=1, tail_depth=1).eval()
    with TestClient(create_app([service(model)])) as c:
        assert c.get("/v1/models").json()["models"][0]["guidance_modes"] == ["none", "ag"]
        for body, field in [({"label": 1}, "label"), ({"guidance": "cfg", "scale": 1}, "guidance")]:
            r = c.post("/v1/images", json=body)
            assert r.status_code == 422 and r.json()["error"]["field"] == field
        r = c.post("/v1/images", json={"seed": 2, "guidance": "ag", "scale": 0.5, "budget": 4})
        assert r.status_code == 200 and "x-elit-labels" not in r.headers


def test_elit_serve_refuses_to_start_exposed_or_misconfigured(tmp_path, model, monkeypatch, capsys):
    """Refused before a model is loaded or a port opened: the model folder does not even exist."""
    from elit.cli import main
    missing = str(tmp_path / "no-model")
    monkeypatch.delenv("ELIT_API_KEY", raising=False)
    for argv, phrase in ((["--host", "0.0.0.0"], "no API key is set"), (["--host", "::"], "no API key is set"),
                         (["--api-key="], "API key is empty"), (["--api-key", "  "], "API key is empty"),
                         (["--port", "70000"], "must be <= 65535"), (["--port", "-1"], "must be >= 0")):
        assert main(["serve", "--model", missing, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert phrase in err and len(err.strip().splitlines()) == 1, (argv, err)
    monkeypatch.setenv("ELIT_API_KEY", "")            # set but empty: auth would be silently off
    assert main(["serve", "--model", missing]) == 2 and "API key is empty" in capsys.readouterr().err
    monkeypatch.setenv("ELIT_API_KEY", KEY)           # a key makes a public address acceptable: it gets to the model
    assert main(["serve", "--model", missing, "--host", "0.0.0.0"]) == 2
    assert "not an elit model folder" in capsys.readouterr().err


def test_port_0_prints_the_port_it_listens_on_and_the_opt_out_is_loud(tmp_path, model):
    import httpx
    elit.save_pretrained(model, tmp_path / "tiny")
    env = {k: v for k, v in os.environ.items() if k != "ELIT_API_KEY"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "elit", "serve", "--model", str(tmp_path / "tiny"), "--host",
                             "0.0.0.0", "--insecure-no-api-key", "--port", "0", "--steps", str(STEPS), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("http://" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert any("WARNING" in line and "--insecure-no-api-key" in line for line in lines), lines
        port = int(lines[-1].split("http://0.0.0.0:")[1].split("/")[0])
        assert port != 0
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/images", json={"seed": 2}, timeout=60)
        assert r.status_code == 200      # the opt-out serves without a key, on the port it printed
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# ---------------------------------------------------------------------- a text-to-image model
@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    from test_prompts import save_text_model
    return save_text_model(tmp_path_factory.mktemp("t2i") / "tiny-t2i")


def text_service(path, encoder=None, model=None, **kw):
    """The tiny text model (tests/test_prompts.py) with the word encoder its folder carries."""
    from elit.sampling.prompts import TEXT_ENCODER, WordTableEncoder
    kw.setdefault("cost", CostModel(0.001, 0.01))
    return ModelService("t2i", model or elit.load_pretrained(path), default_steps=STEPS, limits=kw.pop("limits", Limits()),
                        text_encoder=encoder or WordTableEncoder.load(path / TEXT_ENCODER), **kw)


@pytest.fixture(scope="module")
def text_client(text_dir):
    with TestClient(create_app([text_service(text_dir)])) as c:
        yield c


def encoded(path, *rows):
    from elit.sampling.prompts import TEXT_ENCODER, WordTableEncoder
    return WordTableEncoder.load(path / TEXT_ENCODER).encode(list(rows))


def test_a_text_model_answers_a_prompt_with_what_elit_sample_draws(text_client, text_dir):
    model = elit.load_pretrained(text_dir)
    r = text_client.post("/v1/images", json={"prompt": "a photo of a dress", "seed": 7, "budget": 4, "guidance": "ccfg",
                                             "scale": 1.0, "weak_budget": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    cond = encoded(text_dir, "a photo of a dress", "")     # cfg / ccfg's negative: the empty prompt by default
    want = expected(model, [7], labels=cond[0], negative=cond[1], budget=4, guidance="ccfg", scale=1.0, weak_budget=2)
    assert np.array_equal(pixels(r.content), want[0])
    assert (r.headers["x-elit-budget"], r.headers["x-elit-weak-budget"], r.headers["x-elit-text-tokens"]) == ("4", "2", "8")
    assert "x-elit-labels" not in r.headers
    r = text_client.post("/v1/images", json={"prompt": "an ankle boot", "negative_prompt": "a grey bag", "seed": 3,
                                             "num_images": 2, "guidance": "cfg", "scale": 2.0, "format": "json"})
    body = r.json()
    assert r.status_code == 200 and body["prompt"] == "an ankle boot" and body["negative_prompt"] == "a grey bag"
    assert body["budget"] == model.budgets[-1] and body["labels"] is None and body["seeds"] == [3, 4]
    cond = encoded(text_dir, "an ankle boot", "a grey bag")
    want = expected(model, [3, 4], labels=cond[0], negative=cond[1], guidance="cfg", scale=2.0)
    assert np.array_equal(np.stack([pixels(base64.b64decode(b)) for b in body["images"]]), want)


def test_models_says_the_model_is_text_conditioned(text_client):
    info = text_client.get("/v1/models").json()["models"][0]
    assert info["condition"] == "text" and info["classes"] == [] and info["guidance_modes"] == ["none", "cfg", "ccfg", "ag"]
    assert info["text"]["encoder"]["kind"] == "word-table" and info["text"]["tokens_assumed"] == 8
    assert info["text"]["max_prompt_chars"] == 1000


TEXT_BAD = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": ["a dress"]}, "prompt"),
    ({"prompt": "a " * 600}, "prompt"),                           # 1200 characters: above the 1000 cap
    ({"prompt": "a photo of a cat"}, "prompt"),                   # a word the model's encoder does not know
    ({"prompt": "a dress " * 5}, "prompt"),                       # 10 words: the encoder takes 8
    ({"prompt": "a dress", "label": 1}, "label"),
    ({"prompt": "a dress", "negative_prompt": "a bag"}, "negative_prompt"),       # no cfg / ccfg: no negative
    ({"prompt": "a dress", "guidance": "cfg", "negative_prompt": 5}, "negative_prompt"),
    ({"prompt": "a dress", "guidance": "cfg", "negative_prompt": "a dog"}, "negative_prompt"),
]


@pytest.mark.parametrize("body, field", TEXT_BAD, ids=[str(b)[:60] for b, _ in TEXT_BAD])
def test_a_bad_prompt_is_a_4xx_naming_its_field(text_client, body, field):
    r = text_client.post("/v1/images", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["message"]
    assert text_client.post("/v1/images", json={"prompt": "a bag", "steps": 1}).status_code == 200


def test_a_class_model_refuses_text(client):
    for field in ("prompt", "negative_prompt"):
        r = client.post("/v1/images", json={field: "a dress"})
        assert r.status_code == 422 and r.json()["error"]["field"] == field
        assert "class-conditional and takes no text; give `label`" in r.json()["error"]["message"]


class LongerWithPicture:
    """The word encoder, padded to 12 tokens when a row says "picture": two text lengths, as a real
    tokenizer gives (the padding masked out, as the pipelines pad)."""

    def __init__(self, words):
        self.words = words

    def check(self, prompt):
        self.words.check(prompt)

    def encode(self, rows):
        from elit.model import TextCondition
        cond = self.words.encode(rows)
        pad = 4 if any("picture" in r for r in rows) else 0
        return TextCondition(torch.nn.functional.pad(cond.embeds, (0, 0, 0, pad)),
                             torch.nn.functional.pad(cond.mask, (0, pad)))

    def describe(self):
        return {"kind": "test"}


def test_text_requests_batch_only_with_requests_of_their_text_length(text_dir):
    """Three requests wait (worker paused): the two 8-token prompts run as one batch, the 12-token one alone
    and predicted dearer; each image equals its solo image."""
    from elit.sampling.prompts import TEXT_ENCODER, WordTableEncoder
    svc = text_service(text_dir, LongerWithPicture(WordTableEncoder.load(text_dir / TEXT_ENCODER)))
    bodies = {"a": {"prompt": "a dress", "seed": 1, "budget": 8}, "b": {"prompt": "a picture of a dress", "seed": 2,
                                                                       "budget": 8},
              "c": {"prompt": "a bag", "seed": 3, "budget": 8}}
    with TestClient(create_app([svc], manage_workers=False)) as c:
        def run(names):
            got = {}
            threads = [threading.Thread(target=lambda n=n: got.__setitem__(n, c.post("/v1/images", json=bodies[n])))
                       for n in names]
            for t in threads:
                t.start()
                while len(svc.scheduler.queue) < threads.index(t) + 1:    # queued in this order
                    time.sleep(0.01)
            while svc.scheduler.step():
                pass
            for t in threads:
                t.join()
            return got
        solo = {n: run([n])[n] for n in bodies}
        together = run(["a", "b", "c"])
    assert [together[n].headers["x-elit-batch-images"] for n in "abc"] == ["2", "1", "2"]
    assert [together[n].headers["x-elit-text-tokens"] for n in "abc"] == ["8", "12", "8"]
    gflops = {n: float(together[n].headers["x-elit-gflops-per-image"]) for n in "abc"}
    assert gflops["a"] == gflops["c"] < gflops["b"]          # text length counts in the cost
    for n in "abc":
        a, b = pixels(solo[n].content).astype(int), pixels(together[n].content).astype(int)
        assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


def test_calibration_times_a_text_models_forward_with_its_text_tokens(text_dir):
    """Without a given cost model the service calibrates at start-up, each timed forward carrying a text
    condition of the config's length (the length its FLOP counts assume)."""
    from elit.model import TextCondition
    model = elit.load_pretrained(text_dir)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    try:
        svc = text_service(text_dir, model=model, cost=None, calibration_sizes=[1, 2])
    finally:
        hook.remove()
    assert [(row["budget"], row["images"]) for row in svc.calibration] == [(2, 1), (2, 2), (9, 1), (9, 2), (16, 1),
                                                                          (16, 2)]
    assert svc.cost.beta > 0
    assert seen and all(isinstance(y, TextCondition) and y.tokens == 8 for y in seen)
