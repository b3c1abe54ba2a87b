"""Every checked bad input and its message: docs/errors.md is generated from this table.

Each CLI case runs the real command in a folder of prepared inputs and must exit with status 2 and
a one-line message ("elit CMD: error: ...") that names the problem and the fix, with no traceback.
Each Python case must raise a UserError. The docs table must list every case with exactly the
message it gives today; regenerate it after changing a message:

    PYTHONPATH=src python tests/test_bad_inputs.py     # rewrites docs/errors.md
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile

import numpy as np
import pytest
import torch

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from conftest import needs_fmnist  # noqa: E402  (tests/ on the path when run as a script)
DOC = TESTS.parent / "docs" / "errors.md"

TINY_TRAIN = ("model.hidden_size=32 model.depth=3 model.num_heads=2 model.head_depth=1 model.tail_depth=1 "
              "train.global_batch_size=8 log.log_every=5 log.ckpt_every=5 log.sample_per_row=2 "
              "log.sample_steps=2 log.sample_budgets=[1,16] log.progress=false system.threads=1")
NO_CUDA = "no-cuda"       # cases that are errors only where CUDA is missing
NEEDS_DATA = "fmnist"     # cases that need Fashion-MNIST installed

# (command line after `elit`, a phrase the message must contain, condition)
CLI_CASES = [
    # ---- elit sample
    ("sample --model tiny --out s --seeds 99999999999999999999", "too large", None),
    ("sample --model tiny --out s --seeds 5-2", "is empty", None),
    ("sample --model tiny --out s --seeds 3,1", "strictly increasing", None),
    ("sample --model tiny --out s --seeds abc", "cannot read seeds", None),
    ("sample --model tiny --out s --device tpu", "not a device", None),
    ("sample --model tiny --out s --device cuda", "CUDA is not available", NO_CUDA),
    ("sample --model tiny --out afile", "is a file", None),
    ("sample --model tiny --out s --batch-size 0", "must be >= 1", None),
    ("sample --model tiny --out s --batch-size -3", "must be >= 1", None),
    ("sample --model tiny --out s --steps 0", "must be >= 1", None),
    ("sample --model tiny --out s --steps ten", "must be an integer", None),
    ("sample --model tiny --out s --shift 0", "must be > 0", None),
    ("sample --model tiny --out s --shift nan", "finite", None),
    ("sample --model tiny --out s --cache -1", "must be >= 0", None),
    ("sample --model tiny --out s --budget 99", "not a valid number of latents", None),
    ("sample --model tiny --out s --budget 1.5", "fraction", None),
    ("sample --model tiny --out s --budget lots", "cannot read budget", None),
    ("sample --model tiny --out s --budget 2 --schedule 4", "either --budget or --schedule", None),
    ("sample --model tiny --out s --schedule 4@2,full", "", None),
    ("sample --model tiny --out s --guidance pag --scale 1", "unknown guidance", None),
    ("sample --model tiny --out s --scale 1", "guidance mode 'none'", None),
    ("sample --model tiny --out s --guidance cfg --scale lots", "must be a number", None),
    ("sample --model tiny --out s --guidance ag --scale 1 --budget 2 --weak-budget 2", "below the main budget", None),
    ("sample --model tiny --out s --guidance ccfg --scale 1 --budget 2 --weak-budget 3", "above the main budget", None),
    ("sample --model tiny --out s --guidance cfg --scale 1 --weak-budget 1", "use ccfg", None),
    ("sample --model tiny --out s --guidance cfg --scale 1 --interval 0.8", "interval", None),
    ("sample --model tiny --out s --labels 99", "labels must lie", None),
    ("sample --model tiny --out s --labels shoe", "cannot read labels", None),
    ("sample --model tiny --out s --seeds 0-2 --labels 1,2", "2 labels for 3 seeds", None),
    ("sample --model tiny --out s --sampler rk4", "unknown sampler", None),
    ("sample --model tiny --out s --sampler ddim", "ddim samples discrete-VP epsilon models", None),
    ("sample --model tiny --out s --dtype float64", "invalid choice", None),
    ("sample --model tiny --out s --bogus", "unrecognized arguments", None),
    ("sample --out s", "required: --model", None),
    ("sample --model notamodel --out s", "not an elit model folder", None),
    ("sample --model missing --out s", "not an elit model folder", None),
    ("sample --model listconfig --out s", "is not an elit model config", None),
    ("sample --model wrongshape --out s", "do not match its config", None),
    ("sample --model nanweights --out s", "hold NaN/Inf", None),
    ("sample --model tiny --out foreign", "did not write", None),
    ("sample --model tiny --out samples-b2 --budget 4", "holds samples of other settings", None),
    ("sample --model tiny --out unfinished --steps 1 --seeds 0-1 --labels 3", "was sampled with label", None),
    ("sample --model tiny --out s --weak-budget 1", "with guidance mode 'none'", None),
    ("sample --model tiny --out s --seeds 0-99999999999", "at most 1,000,000", None),
    ("sample --model tiny --out /proc/self", "cannot write /proc/self", None),
    ("sample --model tiny --out afile/s", "afile is a file", None),
    ("sample --model tiny --out s --seeds 0--3", "non-negative", None),
    ("sample --model huge --out s --steps 1 --seeds 0", "NaN/Inf samples", None),   # and no folder left behind
    # ---- elit sample on a text-to-image model (t2i: a tiny one carrying the demo's word encoder)
    ("sample --model t2i --out s", "give --prompt TEXT", None),
    ("sample --model t2i --out s --prompt=", "must not be empty", None),
    ("sample --model t2i --out s --prompt cat", "does not know (cat)", None),
    ("sample --model t2i --out s --prompt dress --labels 3", "not --labels", None),
    ("sample --model t2i --out s --prompt dress --negative-prompt bag", "unconditional input of cfg / ccfg", None),
    ("sample --model t2i --out s --prompts nowhere.txt", "does not exist", None),
    ("sample --model t2i --out s --prompts blank.txt", "holds no prompt", None),
    ("sample --model t2i --out s --prompt dress --pipeline adir", "not a diffusers pipeline folder", None),
    ("sample --model t2i --out s --prompt dress --pipeline sd3pipe", "give the pipeline folder of its own family", None),
    ("sample --model t2i --out s --prompt dress --prompt bag --seeds 0-999999", "ask for 2,000,000 images", None),
    ("sample --model t2ibare --out s --prompt dress", "carries no text_encoder/", None),
    ("sample --model t2i --out t2i-samples --steps 1 --seeds 0-1 --prompt bag", "holds samples of other settings", None),
    ("sample --model tiny --out s --prompt dress", "is for text-to-image models", None),
    # ---- elit fid / elit ref
    ("fid imgs imgs --num -5 --metric-net fmnist", "must be >= 1", None),
    ("fid imgs imgs --batch-size 0 --metric-net fmnist", "must be >= 1", None),
    ("fid badimgs imgs --metric-net fmnist --quiet", "not a readable image", None),
    ("fid garbage.npz imgs --metric-net fmnist --quiet", "not a readable .npz", None),
    ("fid imgs missing --metric-net fmnist --quiet", "not an image folder", None),
    ("fid imgs imgs --metric-net fmnist --device tpu", "not a device", None),
    ("fid inception-stats.npz imgs --metric-net fmnist --quiet", "feature network", None),
    ("fid adir imgs --metric-net fmnist --quiet", "no images", None),
    ("fid unfinished imgs --metric-net fmnist --quiet", "unfinished elit sample run", None),
    ("fid mixedimgs imgs --metric-net fmnist --quiet", "mixed images", None),
    ("fid imgs imgs --metric-net resnet", "invalid choice", None),
    ("fid imgs", "required: PATH", None),
    ("ref --data imgs --out adir --metric-net fmnist", "is a folder", None),
    ("ref --data imgs --out ref.txt --metric-net fmnist", "must end in .npz", None),
    ("ref --data imgs --out r.npz --num -18 --metric-net fmnist", "must be >= 1", None),
    ("ref --data missing --out r.npz --metric-net fmnist --quiet", "not an image folder", None),
    ("ref --data fmnist-valid --out r.npz --metric-net fmnist --quiet", "fmnist-test", None),
    ("ref --data imgs --out adm.npz --metric-net fmnist --quiet", "not reference statistics", None),
    ("ref --data imgs --out user.npz --metric-net fmnist --quiet", "not reference statistics", None),
    ("ref --data imgs --out garbage.npz --metric-net fmnist --quiet", "not an .npz archive", None),
    # ---- elit flops
    ("flops --model ELIT-DiT-S/2 --input-size -32", "must be >= 1", None),
    ("flops --model ELIT-DiT-S/2 --input-size 0", "must be >= 1", None),
    ("flops --model ELIT-DiT-S/2 --steps -3", "must be >= 1", None),
    ("flops --model ELIT-DiT-S/2 --budgets 0,99", "not valid for this model", None),
    ("flops --model ELIT-DiT-S/2 --budgets few", "comma-separated integers", None),
    ("flops --model ELIT-DiT-Q/2", "neither a model preset", None),
    ("flops --model DiT-S/2 --budgets 1", "no latent interface", None),
    ("flops --model ELIT-DiT-S/2 --input-size 7", "not divisible by patch_size", None),
    ("flops --model ELIT-DiT-S/2 --steps 4 --weak-budget 1", "with guidance mode 'none'", None),
    # ---- elit train
    (f"train --out r --max-steps 2 {TINY_TRAIN} system.threads=-3", "system.threads must be >= 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.grad_clip=-1", "train.grad_clip must be >= 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} model.num_classes=-1", "num_classes must be", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.lr=nan", "train.lr must be a finite number", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.lr=0", "train.lr must be > 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.lr=fast", "train.lr must be a number", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.betas=[2,3]", "train.betas", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.weight_decay=-1", "train.weight_decay must be >= 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.warmup_steps=-1", "train.warmup_steps must be >= 0", None),
    (f"train --out r --max-steps 0 {TINY_TRAIN}", "train.max_steps must be >= 1", None),
    (f"train --out r {TINY_TRAIN} train.max_steps=many", "train.max_steps must be an integer", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.seed=-1", "train.seed must be >= 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.max_nonfinite_steps=-1", "max_nonfinite_steps", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.time_std=-1", "train.time_std", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.time_distribution=normal", "train.time_distribution", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.class_dropout_prob=1", "class_dropout_prob", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.ema_decay=1", "train.ema_decay", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.budget_draw=99", "train.budget_draw=99", NEEDS_DATA),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.budget_draw=some", "train.budget_draw must be", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.budget_min=0", "budget_min", NEEDS_DATA),
    (f"train --out r --max-steps 2 {TINY_TRAIN} log.sample_steps=0", "log.sample_steps must be >= 1", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} log.log_every=0", "log.log_every must be >= 1", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} log.progress=maybe", "log.progress must be true or false", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} log.sample_budgets=[0]", "log.sample_budgets", NEEDS_DATA),
    (f"train --out r --max-steps 2 {TINY_TRAIN} system.num_workers=-1", "system.num_workers must be >= 0", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} system.device=tpu", "system.device must be", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} system.device=cuda", "CUDA is not available", NO_CUDA),
    (f"train --out r --max-steps 2 {TINY_TRAIN} system.parallel=zero", "system.parallel", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} train.lrr=1", "unknown config key train.lrr", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} optim.lr=1", "unknown config section", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} lr=1", "must look like section.key=value", None),
    ("train --config nope --out r", "neither a file nor a built-in preset", None),
    ("train --config dupkey.yaml --out r", "set twice in one mapping", None),
    (f"train --out r --max-steps 5 {TINY_TRAIN} train.max_steps=2.5", "is set twice (--max-steps 5", None),
    (f"train --out r --max-steps 5 {TINY_TRAIN} train.max_steps=true", "is set twice (--max-steps 5", None),
    (f"train --out r {TINY_TRAIN} train.max_steps=2.5 train.max_steps=5", "must be an integer, got 2.5", None),
    # ---- elit finetune
    ("finetune --config fmnist-t2i --out r", "no teacher", None),
    ("finetune --teacher nope --config fmnist-t2i --out r", "not a model folder", None),
    ("finetune --teacher tiny --config nope --out r", "fine-tuning presets", None),
    ("finetune --teacher badteacher --config fmnist-t2i --out r", "lacks 'patch_size'", None),
    ("finetune --teacher plaindit --config fmnist-elit-dit --out r", "the teacher fixes the backbone", None),
    ("finetune --teacher plaindit --config fmnist-elit-dit --out foreign model.hidden_size=32 model.depth=3 "
     "model.num_heads=2", "not an elit run folder", None),
    ("train --config badyaml.yaml --out r", "not valid YAML", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} model.in_channels=3", "set model.in_channels=1", NEEDS_DATA),
    (f"train --out r --max-steps 2 {TINY_TRAIN} model.window=[3,3]", "do not divide", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} data.name=nope", "unknown dataset name", None),
    (f"train --out r --max-steps 2 {TINY_TRAIN} data.root=nowhere", "does not exist", None),
    (f"train --out afile --max-steps 2 {TINY_TRAIN}", "is a file", None),
    (f"train --out foreign --max-steps 2 {TINY_TRAIN}", "not an elit run folder", None),
    (f"train --out otherrun --max-steps 2 {TINY_TRAIN}", "holds another run", None),
    (f"train --out run5 --max-steps 8 {TINY_TRAIN} model.hidden_size=48", "different model", NEEDS_DATA),
    (f"train --out run5 --max-steps 8 {TINY_TRAIN} train.global_batch_size=4", "cannot resume the data order",
     NEEDS_DATA),
    (f"train --out brokenlog --max-steps 8 {TINY_TRAIN}", "log.jsonl line 1", NEEDS_DATA),
    (f"train --out corrupt --max-steps 8 {TINY_TRAIN}", "corrupt or truncated", NEEDS_DATA),
    (f"train --out run5 --max-steps 3 {TINY_TRAIN}", "at step 5 already", NEEDS_DATA),
    (f"train --out run5 --max-steps 8 {TINY_TRAIN} model.window=[2,2]", "window: [4, 4] -> [2, 2]", NEEDS_DATA),
    # ---- elit eval
    ("eval --model tiny --ref imgs --num 1", "must be >= 2", None),
    ("eval --model tiny --ref imgs --guidance best", "unknown guidance", None),
    ("eval --model tiny --ref imgs --budgets 99", "not valid for model", None),
    ("eval --model tiny --ref imgs --budgets few", "comma-separated list", None),
    ("eval --model tiny --ref imgs --device tpu", "not a device", None),
    ("eval --model tiny --ref imgs --json adir", "is a folder", None),
    ("eval --model tiny --ref imgs --seed-start -1", "must be >= 0", None),
    ("eval --model tiny --ref imgs --scales high", "comma-separated list", None),
    ("eval --model tiny --ref imgs --metrics fidd --num 2 --steps 1 --no-progress", "unknown metrics", None),
    ("eval --model tiny --ref imgs --json imgs/0.png", "is not JSON", None),
    ("eval --model tiny --ref imgs --json user.json", "not elit eval's rows", None),
    ("eval --model tiny --ref imgs --json trunc.json", "is not JSON", None),
    ("eval --model tiny --ref imgs --plot imgs/0.png", "not a plot elit eval drew", None),
    ("eval --model tiny --ref imgs --num 3 --metrics fd_fmnist --json rows.json", "num: 2 -> 3", None),
    ("eval --model tiny --model ./tiny --ref imgs", "two models are named 'tiny'", None),
    # ---- elit convert
    ("convert --weights w.pt --preset DiT-S/2 --out c", "--from is required", None),
    ("convert --from dit --weights w.pt --out c", "one of --config FILE or --preset NAME", None),
    ("convert --from dit --weights w.pt --preset DiT-S/2 --config c.json --out c", "not allowed with", None),
    ("convert --from dit --weights w.pt --preset DiT-S/2 --out foreign", "not an elit model folder", None),
    ("convert --from dit --weights missing.pt --preset DiT-S/2 --out c", "missing.pt", None),
    ("convert --from dit --weights w.pt --preset DiT-Q/2 --out c", "DiT-Q/2", None),
    ("convert --from dit --weights w.pt --preset DiT-S/2 --out c --min-budget 0", "must be >= 1", None),
    ("convert --from sd --weights w.pt --preset DiT-S/2 --out c", "invalid choice", None),
    ("convert --from dit --weights w.pt --preset DiT-S/2 --out tiny", "--overwrite", None),
    ("convert --from authors-elit --weights nan.safetensors --config elitcfg.json --out c", "hold NaN/Inf", None),
    ("convert --from dit --weights rand.pt --preset DiT-S/2 --out c", "not a PyTorch checkpoint", None),
    ("convert --from dit --weights adir --preset DiT-S/2 --out c", "is a folder", None),
    ("convert --from dit --weights w.pt --preset U-ViT-L/2 --out c", "use --from uvit", None),
    # ---- elit serve (refused before a model is loaded or a port is opened)
    ("serve --model tiny --host 0.0.0.0", "no API key is set", None),
    ("serve --model tiny --api-key=", "API key is empty", None),
    ("serve --model tiny --port 70000", "must be <= 65535", None),
    # ---- elit plan, extract-latents, train-classifier, elit itself
    ("plan --model tiny --target-gflops -1", "must be > 0", None),
    ("plan --model tiny --target-gflops 1 --reference-steps 0", "must be >= 1", None),
    ("plan --model tiny", "one of the arguments --target-gflops --target-seconds is required", None),
    ("plan --model tiny --target-gflops 1 --save-table user.json", "not a planner table", None),
    ("extract-latents --vae v --data imgs --out lat --batch-size 0", "must be >= 1", None),
    ("extract-latents --vae v --data imgs --out lat --device tpu", "not a device", None),
    ("extract-latents --vae v --data imgs --out afile", "is a file", None),
    ("train-classifier --out adir", "is a folder", None),
    ("train-classifier --out c.pt", "must end in .safetensors", None),
    ("train-classifier --out c.safetensors --epochs 0", "must be >= 1", None),
    ("train-classifier --out tiny/model.safetensors", "not a classifier", None),
    ("bogus", "unknown command", None),
]


# (how the doc shows the body, the body: a JSON value or raw bytes, HTTP status, field): POST /v1/images
# of a server of the tiny model (what `elit serve --model tiny` builds, with an API key).
HTTP_CASES = [
    ('{"deadline_ms": "500"}', {"deadline_ms": "500"}, 422, "deadline_ms"),
    ('{"deadline_ms": "1e3"}', {"deadline_ms": "1e3"}, 422, "deadline_ms"),
    ('{"deadline_ms": true}', {"deadline_ms": True}, 422, "deadline_ms"),
    ('{"seed": 1e400}', b'{"seed": 1e400}', 422, "seed"),
    ('{"guidance": "cfg", "scale": "2"}', {"guidance": "cfg", "scale": "2"}, 422, "scale"),
    ('{"guidance": "cfg", "scale": 1e300}', {"guidance": "cfg", "scale": 1e300}, 422, "scale"),
    ('{"guidance": "cfg", "scale": 1e308}', {"guidance": "cfg", "scale": 1e308}, 422, "scale"),
    ('{"guidance": "cfg", "scale": -1}', {"guidance": "cfg", "scale": -1}, 422, "scale"),
    ('{"weak_budget": 1}', {"weak_budget": 1}, 422, "weak_budget"),
    ('{"weak_budget": 1, "deadline_ms": 1000}', {"weak_budget": 1, "deadline_ms": 1000}, 422, "weak_budget"),
    ('{"steps": 2.0}', {"steps": 2.0}, 422, "steps"),
    ('{"budget": "FULL"}', {"budget": "FULL"}, 422, "budget"),
    ('{"seed": 1, "seed": 2}', b'{"seed": 1, "seed": 2}', 400, "body"),
    ('{"seed": [[[... 4,000 nested brackets ...]]]}', b'{"seed": ' + b"[" * 4000 + b"]" * 4000 + b"}", 400, "body"),
    ('[[[... 4,000 nested brackets ...]]]', b"[" * 4000 + b"]" * 4000, 400, "body"),
    ('{"prompt": "a dress"}', {"prompt": "a dress"}, 422, "prompt"),
    # the same server's text-to-image model (t2i, with the demo's word encoder)
    ('{"model": "t2i"}', {"model": "t2i"}, 422, "prompt"),
    ('{"model": "t2i", "prompt": ""}', {"model": "t2i", "prompt": ""}, 422, "prompt"),
    ('{"model": "t2i", "prompt": 5}', {"model": "t2i", "prompt": 5}, 422, "prompt"),
    ('{"model": "t2i", "prompt": ["a dress"]}', {"model": "t2i", "prompt": ["a dress"]}, 422, "prompt"),
    ('{"model": "t2i", "prompt": "a photo of a cat"}', {"model": "t2i", "prompt": "a photo of a cat"}, 422, "prompt"),
    ('{"model": "t2i", "prompt": "a a a ... (1,200 characters)"}', {"model": "t2i", "prompt": "a " * 600}, 422, "prompt"),
    ('{"model": "t2i", "prompt": "a dress", "label": 1}', {"model": "t2i", "prompt": "a dress", "label": 1}, 422, "label"),
    ('{"model": "t2i", "prompt": "a dress", "negative_prompt": "a bag"}',
     {"model": "t2i", "prompt": "a dress", "negative_prompt": "a bag"}, 422, "negative_prompt"),
]
HTTP_KEY = "k3y"


def _api_cases():
    """(description, call, phrase): Python calls on a tiny model (16x16, 1 channel, 10 classes, budgets 1..4)."""
    import elit
    from elit.eval.metrics.compute import compute_metrics
    from elit.eval.metrics.stats import frechet_distance
    m = elit.load_pretrained("tiny")
    x, t, y = torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([1, 2])
    plain = elit.create_model("DiT-S/2", hidden_size=32, depth=2, num_heads=2, in_channels=1, input_size=16,
                              num_classes=0)
    fm = elit.create_model("ELIT-DiT-S/2", hidden_size=32, depth=3, num_heads=2, head_depth=1, tail_depth=1,
                           in_channels=1, num_classes=10, input_size=32)
    return [
        ("model(x.double(), t, y)", lambda: m(x.double(), t, y), "cast it"),
        ("model(x.long(), t, y)", lambda: m(x.long(), t, y), "floating-point"),
        ("model(x, t, tensor([1, 99]))", lambda: m(x, t, torch.tensor([1, 99])), "class labels must lie"),
        ("model(x, t, y.float())", lambda: m(x, t, y.float()), "integer tensor"),
        ("model(x, t, None)", lambda: m(x, t, None), "y is required"),
        ("unconditional(x, t, y)", lambda: plain(x, t, y), "unconditional"),
        ("model(x, t, y, budget=tensor([4, 8]))", lambda: m(x, t, y, budget=torch.tensor([4, 8])), "one number"),
        ("model(x, t, y, budget=0)", lambda: m(x, t, y, budget=0), "not a valid number of latents"),
        ("model(x, t, y, budget=1.5)", lambda: m(x, t, y, budget=1.5), "fraction"),
        ("model(x, t, y, budget='4')", lambda: m(x, t, y, budget="4"), "budget must be an int"),
        ("plain_backbone(x, t, budget=4)", lambda: plain(x, t, None, budget=4), "budget must be None"),
        ("model(x, tensor([0.1, nan]), y)", lambda: m(x, torch.tensor([0.1, float("nan")]), y), "finite times"),
        ("model(x, 2.0, y)", lambda: m(x, 2.0, y), "in [0, 1]"),
        ("model(x, rand(3), y)", lambda: m(x, torch.rand(3), y), "scalar or have shape"),
        ("model(rand(2, 3, 16, 16), t, y)", lambda: m(torch.randn(2, 3, 16, 16), t, y), "must have shape"),
        ("model(rand(2, 1, 15, 15), t, y)", lambda: m(torch.randn(2, 1, 15, 15), t, y), "multiples of the patch"),
        ("model_32px(28x28 Fashion-MNIST image)", lambda: fm(torch.randn(2, 1, 28, 28), t, y), "pad"),
        ("elit.sample(model, seeds=5)", lambda: elit.sample(m, seeds=5), "not an int"),
        ("elit.sample(model, seeds=[])", lambda: elit.sample(m, seeds=[]), "no seeds"),
        ("elit.sample(model, seeds=[2**64])", lambda: elit.sample(m, seeds=[2 ** 64]), "too large"),
        ("elit.sample(model, range(4), batch_size=0)", lambda: elit.sample(m, range(4), batch_size=0), "batch size"),
        ("elit.create_model('ELIT-DiT-Q/2')", lambda: elit.create_model("ELIT-DiT-Q/2"), "ELIT-DiT-Q/2"),
        ("elit.create_model(..., num_classes=-1)", lambda: elit.create_model("ELIT-DiT-S/2", num_classes=-1),
         "num_classes must be"),
        ("elit.load_pretrained('listconfig')", lambda: elit.load_pretrained("listconfig"), "not an elit model config"),
        ("elit.load_pretrained('nanweights')", lambda: elit.load_pretrained("nanweights"), "hold NaN/Inf"),
        ("compute_metrics(float images, ...)", lambda: compute_metrics(np.zeros((4, 8, 8), np.float32), "imgs",
                                                                       ("fd_fmnist",)), "must be uint8"),
        ("compute_metrics(images, ..., num=-5)", lambda: compute_metrics(np.zeros((4, 32, 32), np.uint8), "imgs",
                                                                         ("fd_fmnist",), num=-5), "whole number"),
        ("frechet_distance(mu of 3, sigma of 4)", lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(4),
                                                                           np.eye(4)), "different shapes"),
    ]


# ---------------------------------------------------------------------- the prepared inputs
def build_world(root: pathlib.Path) -> None:
    """Everything the cases name, in `root` (the cases run with it as the working directory)."""
    import elit
    from PIL import Image

    from elit.eval.metrics.stats import FeatureStats, save_stats
    from test_sampling import tiny_model
    os.chdir(root)
    tiny = tiny_model()
    elit.save_pretrained(tiny, "tiny")
    (root / "afile").write_text("a file\n")
    (root / "adir").mkdir()
    (root / "notamodel").mkdir()
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("someone's notes\n")
    shutil.copytree("tiny", "listconfig")
    (root / "listconfig" / "config.json").write_text("[1, 2, 3]\n")
    from safetensors.torch import load_file, save_file
    shutil.copytree("tiny", "wrongshape")   # one weight of another shape under its own name
    state = load_file("wrongshape/model.safetensors")
    state["backbone.x_embedder.proj.bias"] = torch.zeros(7)
    save_file(state, "wrongshape/model.safetensors")
    broken = tiny_model()
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    elit.save_pretrained(broken, "nanweights")
    for name, size in (("imgs", 32), ("badimgs", 32), ("mixedimgs", 32)):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((size, size), 60 * i, np.uint8)).save(root / name / f"{i}.png")
    (root / "badimgs" / "9.png").write_text("not a png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "mixedimgs" / "9.png")
    (root / "garbage.npz").write_text("not an npz")
    save_stats(root / "inception-stats.npz", FeatureStats(np.zeros(2048), np.eye(2048), 10,
                                                         "inception-v3-tf-2015-12-05/pool3/tf-bilinear-299", "TF"))
    (root / "badyaml.yaml").write_text("model: [unclosed\n")
    (root / "dupkey.yaml").write_text("model:\n  preset: ELIT-DiT-S/2\ndata:\n  name: fmnist\ntrain:\n  lr: 1.0e-3\n"
                                      "  seed: 0\n  lr: 2.0e-3\n")
    torch.save({"pos_embed": torch.zeros(1)}, root / "w.pt")
    (root / "rand.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    np.savez(root / "adm.npz", arr_0=np.zeros((2, 8, 8, 1), np.uint8))   # a sample run's ADM-style images
    np.savez(root / "user.npz", weights=np.ones(3))
    (root / "user.json").write_text('{"my": "notes"}\n')
    (root / "trunc.json").write_text('[{"model": "tiny", "latents_per_group": ')
    (root / "rows.json").write_text(json.dumps([{   # a row elit eval saved with --num 2
        "model": "tiny", "latents_per_group": 4, "guidance": "none", "scale": 0.0, "weak_budget": None, "steps": 40,
        "sampler": "euler", "fd_fmnist": 1.0, "protocols": {}, "num": 2, "seed_start": 0, "ref": "imgs"}]))
    huge = tiny_model()   # finite weights whose samples overflow to NaN/Inf
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e30)
    elit.save_pretrained(huge, "huge")
    from test_convert import OTHER, reference_state
    nan_state = reference_state(OTHER)
    nan_state["x_embedder.proj.weight"][0, 0, 0, 0] = float("nan")   # a diverged training's checkpoint
    save_file(nan_state, str(root / "nan.safetensors"))
    (root / "elitcfg.json").write_text(json.dumps({"constructor_kwargs": OTHER}))
    (root / "badteacher").mkdir()   # a diffusers-like config without its geometry
    (root / "badteacher" / "config.json").write_text('{"_class_name": "QwenImageTransformer2DModel"}\n')
    elit.save_pretrained(elit.create_model("DiT-S/2", hidden_size=32, depth=3, num_heads=2, in_channels=1,
                                           num_classes=10, input_size=32), "plaindit")
    from test_prompts import save_text_model, tiny_text_model
    save_text_model(root / "t2i")
    elit.save_pretrained(tiny_text_model(), "t2ibare")     # a text model without its text encoder
    (root / "blank.txt").write_text("\n  \n")
    (root / "sd3pipe").mkdir()
    (root / "sd3pipe" / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}\n')
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1]:
        assert _main("sample --model tiny --out samples-b2 --budget 2 --steps 1 --seeds 0-1") == 0
        assert _main("sample --model tiny --out unfinished --steps 1 --seeds 0-1") == 0
        assert _main("sample --model t2i --out t2i-samples --steps 1 --seeds 0-1 --prompt dress") == 0
    record = json.loads((root / "unfinished" / "sampling.json").read_text())
    record["pending"] = [2, 3]
    (root / "unfinished" / "sampling.json").write_text(json.dumps(record))
    from elit.train.config import dump_config, load_config
    (root / "otherrun").mkdir()   # another run's folder, killed before its first checkpoint
    other = load_config("fmnist-elit-dit", TINY_TRAIN.split() + ["model.hidden_size=48"])
    (root / "otherrun" / "config.yaml").write_text(dump_config(other))
    if _has_fmnist():
        with quiet[0], quiet[1]:
            for name in ("run5", "brokenlog", "corrupt"):
                assert _main(f"train --out {name} --max-steps 5 {TINY_TRAIN}") == 0
        log = root / "brokenlog" / "log.jsonl"
        log.write_text("garbage\n" + log.read_text())
        ckpt = root / "corrupt" / "checkpoints" / "step-0000005.pt"
        ckpt.write_bytes(ckpt.read_bytes()[:1000])


def _has_fmnist() -> bool:
    from elit.data.fashion_mnist import missing_files
    return not missing_files()[1]


def _main(command: str) -> int:
    from elit.cli import main
    return main(command.split())


def snapshot(root: pathlib.Path) -> dict[str, int]:
    """Every file under root with its size and modification time (folders by name)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else -1
            for p in root.rglob("*")}


def run_cli_case(command: str) -> tuple[int, str]:
    """(exit status, stderr) of one command, run in-process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = _main(command)
    return code, err.getvalue()


def run_api_case(call) -> BaseException | None:
    try:
        call()
    except Exception as e:   # the case checks its type
        return e
    return None


def skipped(condition) -> str | None:
    if condition == NO_CUDA and torch.cuda.is_available():
        return "a GPU is present (the case checks the message without CUDA)"
    if condition == NEEDS_DATA and not _has_fmnist():
        return needs_fmnist.kwargs["reason"]
    return None


# ---------------------------------------------------------------------- the docs table
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cli_row(command: str, message: str) -> str:
    return f"| `elit {_cell(command.replace(TINY_TRAIN, 'TINY'))}` | {_cell(message)} |"


def api_row(call: str, error: BaseException) -> str:
    return f"| `{_cell(call)}` | {type(error).__name__}: {_cell(str(error))} |"


def http_row(shown: str, status: int, error: dict) -> str:
    return f"| `POST /v1/images {_cell(shown)}` | {status} `{error['field']}`: {_cell(error['message'])} |"


def http_client():
    """A TestClient of the server `elit serve --model tiny --model t2i --api-key k3y` builds (a fixed cost
    model)."""
    pytest.importorskip("fastapi", reason="pip install 'elit-diffusion[serve]'")
    import elit
    from fastapi.testclient import TestClient

    from elit.serve.app import create_app
    from elit.serve.costmodel import CostModel
    from elit.serve.service import ModelService
    from elit.sampling.prompts import TEXT_ENCODER, WordTableEncoder
    service = ModelService("tiny", elit.load_pretrained("tiny"), default_steps=2, cost=CostModel(0.001, 0.01))
    text = ModelService("t2i", elit.load_pretrained("t2i"), default_steps=2, cost=CostModel(0.001, 0.01),
                        text_encoder=WordTableEncoder.load(pathlib.Path("t2i") / TEXT_ENCODER))
    return TestClient(create_app([service, text], api_key=HTTP_KEY), headers={"X-API-Key": HTTP_KEY})


def run_http_case(client, body) -> tuple[int, dict]:
    r = client.post("/v1/images", content=body) if isinstance(body, bytes) else client.post("/v1/images", json=body)
    return r.status_code, r.json().get("error", {})


def render(cli_rows: list[str], api_rows: list[str], http_rows: list[str]) -> str:
    head = ("# Bad inputs and their messages\n\n"
            "Generated by `PYTHONPATH=src python tests/test_bad_inputs.py` from the cases in\n"
            "`tests/test_bad_inputs.py`, which checks that every command below exits with status 2 and exactly\n"
            "this one-line message (a bug exits with status 1 and a traceback instead). Paths are relative to a\n"
            "folder of prepared inputs: `tiny` is a small ELIT model folder, `t2i` a small text-to-image one\n"
            "carrying its text encoder (`t2ibare` the same without it), `imgs` a folder of images,\n"
            "`afile` a file, `adir` an empty folder, `foreign` a folder of someone else's files, `TINY` the\n"
            "settings of a tiny training run (`" + TINY_TRAIN + "`).\n\n"
            f"{len(cli_rows)} command lines, {len(api_rows)} Python calls and {len(http_rows)} HTTP requests.\n\n")
    return (head + "## Command line\n\n| input | message |\n|---|---|\n" + "\n".join(cli_rows)
            + "\n\n## Python\n\n| call | error |\n|---|---|\n" + "\n".join(api_rows)
            + "\n\n## HTTP (`elit serve`)\n\nRequests to a server of `tiny` (the default model) and `t2i` (`\"model\": "
              "\"t2i\"`). Each is answered with its status and "
              "`{\"error\": {\"field\": ..., \"message\": ...}}`; the server goes on serving.\n\n"
              "| request | answer |\n|---|---|\n" + "\n".join(http_rows) + "\n")


def doc_rows() -> set[str]:
    return {line for line in DOC.read_text().splitlines() if line.startswith("| `")} if DOC.is_file() else set()


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    cwd = os.getcwd()
    try:
        build_world(root)
        yield root
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("command, phrase, condition", CLI_CASES, ids=[c[0].replace(TINY_TRAIN, "TINY") for c in CLI_CASES])
def test_cli_bad_input(world, command, phrase, condition, monkeypatch):
    reason = skipped(condition)
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(world)
    before = snapshot(world)
    code, err = run_cli_case(command)
    assert snapshot(world) == before, "a refused command must leave nothing behind"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines, (code, err)
    message = lines[-1]
    assert message.startswith(f"elit {command.split()[0]}: error: ") or message.startswith("elit: "), message
    assert phrase in message, message
    row = cli_row(command, message)
    assert row in doc_rows(), f"docs/errors.md is out of date (run tests/test_bad_inputs.py): {row}"


def test_python_bad_input(world, monkeypatch):
    from elit.errors import UserError
    monkeypatch.chdir(world)
    rows = doc_rows()
    for call, fn, phrase in _api_cases():
        error = run_api_case(fn)
        assert isinstance(error, UserError), (call, error)
        assert phrase in str(error), (call, str(error))
        assert api_row(call, error) in rows, f"docs/errors.md is out of date: {api_row(call, error)}"


def test_http_bad_request(world, monkeypatch):
    monkeypatch.chdir(world)
    rows = doc_rows()
    with http_client() as client:
        for shown, body, status, field in HTTP_CASES:
            got, error = run_http_case(client, body)
            assert (got, error.get("field")) == (status, field), (shown, got, error)
            assert http_row(shown, got, error) in rows, f"docs/errors.md is out of date: {http_row(shown, got, error)}"
        assert client.post("/v1/images", json={"seed": 1, "steps": 1}).status_code == 200   # and it still serves
        assert client.post("/v1/images", json={"model": "t2i", "prompt": "a dress", "steps": 1}).status_code == 200


def test_the_docs_table_has_no_stale_rows(world, monkeypatch):
    monkeypatch.chdir(world)
    api, http = len(_api_cases()), len(HTTP_CASES)
    assert len(doc_rows()) == len(CLI_CASES) + api + http, "regenerate docs/errors.md with tests/test_bad_inputs.py"
    assert re.search(rf"{len(CLI_CASES)} command lines, {api} Python calls and {http} HTTP requests", DOC.read_text())


def write_docs() -> None:
    root = pathlib.Path(tempfile.mkdtemp(prefix="elit-bad-inputs-"))
    cwd = os.getcwd()
    try:
        build_world(root)
        cli_rows = []
        for command, phrase, condition in CLI_CASES:
            if skipped(condition):
                raise SystemExit(f"cannot generate the table here: {skipped(condition)}")
            code, err = run_cli_case(command)
            message = [line for line in err.splitlines() if line.strip()][-1]
            if code != 2 or phrase not in message:
                raise SystemExit(f"case failed: elit {command}\n{err}")
            cli_rows.append(cli_row(command, message))
        api_rows = [api_row(call, run_api_case(fn)) for call, fn, _ in _api_cases()]
        with http_client() as client:
            http_rows = []
            for shown, body, status, field in HTTP_CASES:
                got, error = run_http_case(client, body)
                if (got, error.get("field")) != (status, field):
                    raise SystemExit(f"case failed: POST /v1/images {shown}: {got} {error}")
                http_rows.append(http_row(shown, got, error))
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)
    DOC.write_text(render(cli_rows, api_rows, http_rows))
    print(f"wrote {DOC}: {len(cli_rows)} command lines, {len(api_rows)} Python calls, {len(http_rows)} HTTP requests")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ELIT_CACHE_DIR", tempfile.mkdtemp(prefix="elit-cache-"))
    torch.set_num_threads(1)
    write_docs()
