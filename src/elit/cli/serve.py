"""`elit serve`: an HTTP server for one or more models, with per-request budgets, deadline-aware budget
choice under load, a web page at /, Prometheus metrics, and Ray Serve replicas for scale-out.

    elit serve --model runs/fm/model                    # http://127.0.0.1:8000/
    elit serve --model fm=runs/fm/model --api-key KEY --max-batch 32 --port 8080
    elit serve --model runs/fm/model --ray --replicas 2
    elit serve --model runs/t2i/elit/model               # a text model: requests give a "prompt"

It binds to 127.0.0.1 unless --host says otherwise. See docs/serving.md.
"""
from __future__ import annotations

import os
import pathlib

from elit.cli._args import integer, number
from elit.errors import UserError

HELP = "serve a model over HTTP: per-request budgets, deadline-aware budgets, web page, metrics"


def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="model folder, or NAME=DIR; repeat for several models (the first is the default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=integer(0, "a TCP port", high=65535), default=8000,
                        help="TCP port (default 8000; 0: any free port, printed at start)")
    parser.add_argument("--api-key", default=os.environ.get("ELIT_API_KEY"),
                        help="require this key on /v1/* (Authorization: Bearer KEY); default $ELIT_API_KEY; "
                             "needed for any --host beyond loopback")
    parser.add_argument("--insecure-no-api-key", action="store_true",
                        help="serve a non-loopback --host without an API key: anyone who reaches it can use it")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the dtype the weights are cast to (default float32); --precision bf16 autocasts instead")
    parser.add_argument("--threads", type=integer(1), default=None, help="torch threads of the worker")
    from elit.cli import add_precision_argument
    add_precision_argument(parser)
    parser.add_argument("--steps", type=integer(1), default=40, help="default sampling steps of a request")
    parser.add_argument("--min-steps", type=integer(1), default=None,
                        help="deadline requests may drop to this many steps once the lowest budget does not fit "
                             "(default: half the request's steps)")
    parser.add_argument("--headroom", type=number(low=0), default=0.15,
                        help="fraction of a deadline kept free for prediction error and encoding")
    parser.add_argument("--max-steps", type=integer(1), default=100, help="cap on a request's steps")
    parser.add_argument("--max-images", type=integer(1), default=8, help="cap on images per request")
    parser.add_argument("--max-batch", type=integer(1), default=16, help="cap on images per forward call")
    parser.add_argument("--max-queue", type=integer(1), default=256, help="cap on images waiting (503 beyond)")
    parser.add_argument("--max-body", type=integer(64), default=8192, help="cap on a request body in bytes (413 beyond)")
    parser.add_argument("--max-prompt", type=integer(1), default=1000,
                        help="cap on a text model's prompt (and negative prompt) in characters")
    parser.add_argument("--vae", default=None, help="AutoencoderKL decoding a latent model's samples (default: the "
                                                     "vae/ of --pipeline or of the model folder, if there is one)")
    parser.add_argument("--vae-subfolder", default=None,
                        help="subfolder of --vae that holds the VAE (e.g. 'vae' for a whole pipeline)")
    parser.add_argument("--pipeline", default=None,
                        help="diffusers pipeline folder whose text encoder (and vae/) the text-to-image models use "
                             "(default: each model folder's own text_encoder/)")
    parser.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment (pip install 'elit-diffusion[ray]')")
    parser.add_argument("--replicas", type=integer(1), default=1, help="with --ray: number of replicas")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")


def model_specs(specs: list[str]) -> list[tuple[str, str]]:
    """[(name, folder)] from `DIR` or `NAME=DIR` arguments; names are unique."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (pathlib.Path(spec).name or "model", spec)
        if name in [n for n, _ in out]:
            raise UserError(f"two models are named {name!r}; give them names with NAME=DIR")
        out.append((name, path))
    return out


def serve_options(args):
    """The library's ServeOptions from the command line."""
    from elit.serve.requests import Limits
    from elit.serve.service import ServeOptions
    limits = Limits(max_steps=args.max_steps, max_images=args.max_images, max_batch_images=args.max_batch,
                    max_queue_images=args.max_queue, max_body_bytes=args.max_body, max_prompt_chars=args.max_prompt)
    return ServeOptions(limits=limits, steps=args.steps, min_steps=args.min_steps, headroom=args.headroom,
                        dtype=args.dtype, precision=args.precision, vae=args.vae, vae_subfolder=args.vae_subfolder, pipeline=args.pipeline)


def run(args) -> int:
    import torch

    from elit.serve.binding import check_api_key, check_exposure, listen, url
    args.api_key = check_api_key(args.api_key)
    check_exposure(args.host, args.api_key, args.insecure_no_api_key)   # before anything is loaded
    if args.replicas < 1:
        raise UserError(f"--replicas must be >= 1, got {args.replicas}")
    if args.replicas > 1 and not args.ray:
        raise UserError("--replicas needs --ray (one process serves one replica)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models, options = model_specs(args.model), serve_options(args)
    if args.ray:
        from elit.serve.ray_app import serve_with_ray
        return serve_with_ray(models, options, device, host=args.host, port=args.port, replicas=args.replicas,
                              threads=args.threads, api_key=args.api_key, max_queue=args.max_queue)
    import uvicorn

    from elit.serve.app import create_app
    from elit.serve.service import build_services
    sock = listen(args.host, args.port)   # a taken port fails now, and the URL printed is the one bound
    with sock:
        app = create_app(build_services(models, options, device), api_key=args.api_key)
        print(f"elit serve: {url(sock)}  (API: POST /v1/images, GET /v1/models, /metrics)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level=args.log_level)).run(sockets=[sock])
    return 0
