"""One served model: its weights, its cost model, its scheduler (worker), and the translation of a
request into a job. Images are made by the sampling code that exists (`plan_run` + `sample_batch`:
per-seed noise, the same guidance and solvers as `elit sample`), never by a second sampler. A text
model's request is encoded once, when its job is made (its prompt, and cfg / ccfg's negative prompt,
default the empty prompt, in one call so they share a length), by the text encoder of the options'
pipeline folder or of the model folder (`elit.sampling.prompts`)."""
from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

from elit.errors import UserError
from elit.model.condition import TextCondition
from elit.serve.costmodel import CostModel, calibrate
from elit.serve.requests import FieldError, ImageRequest, Limits
from elit.serve.scheduler import Ladder, Option, Scheduler, Settings

GUIDANCE_MODES = ("none", "cfg", "ccfg", "ag")


def class_names_of(meta: dict, num_classes: int) -> list[str]:
    """Class names for the picker: Fashion-MNIST's when the model was trained on it, else numbers."""
    data = ((meta.get("training") or {}).get("config") or {}).get("data") or {}
    if data.get("name") == "fmnist" and num_classes == 10:
        from elit.data.fashion_mnist import CLASS_NAMES
        return list(CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


@dataclass(frozen=True)
class ServeOptions:
    """How every model of a server is loaded and served (`elit serve`'s options, picklable so a Ray
    replica can build its own services from them)."""
    limits: Limits = Limits()
    steps: int = 40                    # default steps of a request
    min_steps: int | None = None       # deadline requests may drop to this many (None: half of steps)
    headroom: float = 0.15
    dtype: str = "float32"
    precision: str = "auto"            # the passes' arithmetic (elit._precision), chosen before calibration
    vae: str | None = None             # decodes a latent model's samples (default: the vae/ of `pipeline` or the model)
    vae_subfolder: str | None = None
    pipeline: str | None = None        # a diffusers pipeline folder: the text models' text encoder (and vae/)


@dataclass(frozen=True)
class Prompts:
    """A text job's conditions, one row per image: its prompt, and cfg / ccfg's negative (else None).
    The scheduler joins the jobs of a batch with `cat` (they share one text length: its batch key)."""
    cond: TextCondition
    negative: TextCondition | None = None

    def __len__(self) -> int:
        return len(self.cond)

    @staticmethod
    def cat(parts) -> "Prompts":
        negative = None if parts[0].negative is None else TextCondition.cat([p.negative for p in parts])
        return Prompts(TextCondition.cat([p.cond for p in parts]), negative)


def build_services(models: list[tuple[str, str]], options: ServeOptions, device: str) -> list["ModelService"]:
    """Load each (name, folder) and calibrate its cost model (printed, so the log says what the server
    predicts)."""
    services = []
    for name, path in models:
        service = ModelService.from_folder(name, path, options, device)
        c = service.cost
        print(f"elit serve: {name} ({path}) on {device}: budgets {service.budgets or ['full']}; cost model "
              f"{1000 * c.alpha:.2f} ms per forward call + {1000 * c.beta:.3f} ms per GFLOP", flush=True)
        services.append(service)
    return services


class ModelService:
    """A model ready to serve. `cost` defaults to a calibration on this machine at construction."""

    def __init__(self, name: str, model, *, limits: Limits = Limits(), default_steps: int = 40,
                 min_steps: int | None = None, headroom: float = 0.15, class_names=None, cost: CostModel | None = None,
                 decode=None, clock=None, calibration_sizes=None, on_batch=None, text_encoder=None):
        if model.config.backbone.prediction != "velocity":
            raise UserError(f"model {name} predicts {model.config.backbone.prediction!r}, not a rectified-flow "
                            f"velocity; the server's samplers do not apply to it")
        if not 1 <= default_steps <= limits.max_steps:
            raise UserError(f"default steps {default_steps} must lie in 1..{limits.max_steps} (the steps cap)")
        self.name, self.model, self.limits, self.decode = name, model, limits, decode
        self.config = model.config
        self.text_encoder = text_encoder
        if (self.config.condition == "text") != (text_encoder is not None):
            raise UserError(f"model {name} is {self.config.condition}-conditioned: a text encoder goes with a text "
                            f"model, and a text model needs one (its folder's text_encoder/, or --pipeline DIR)")
        if text_encoder is not None:     # a misfit encoder (another width) is refused now, not per request
            both = text_encoder.encode([""])
            model.backbone.check_condition(both, 1, next(iter(model.parameters())).device)
        self.default_steps = default_steps
        self.num_classes = model.num_classes
        self.class_names = list(class_names or [str(i) for i in range(self.num_classes)])
        self.budgets = list(model.budgets)
        self.ladder = Ladder(self.config, min_steps)
        self.calibration = []
        if cost is None:
            budgets = sorted({self.budgets[0], self.budgets[len(self.budgets) // 2], self.budgets[-1]}) \
                if self.budgets else [None]
            sizes = calibration_sizes or sorted({1, limits.max_batch_images})
            cost, self.calibration = calibrate(model, budgets, sizes)
        self.cost = cost
        kwargs = {} if clock is None else {"clock": clock}
        self.scheduler = Scheduler(cost, self.run_batch, max_batch_images=limits.max_batch_images,
                                   max_queue_images=limits.max_queue_images, headroom=headroom,
                                   on_batch=on_batch, **kwargs)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_folder(cls, name: str, path, options: ServeOptions, device: str = "cpu") -> "ModelService":
        """A model folder (elit.save_pretrained) served with `options`: loaded on `device`, its
        latents decoded by the options' VAE (a latent model without one is refused), calibrated here."""
        import torch

        from elit.hub import load_pretrained, read_config
        from elit.vae import decoder_for, vae_beside
        _, meta = read_config(path)
        dtype = getattr(torch, options.dtype)
        model = load_pretrained(path, device=device, dtype=dtype)
        from elit._precision import set_model_precision    # before calibration: the cost model times it
        set_model_precision(model, options.precision, options.limits.max_batch_images,
                            announce=lambda text: print(f"elit serve: model {name}: {text}", flush=True))
        text = model.config.condition == "text"
        vae = vae_beside(options.vae, options.vae_subfolder, options.pipeline if text else None, path)
        decode = decoder_for(model.config, *vae, device, what=f"model {name}")
        encoder = None
        if text:
            from elit.sampling.prompts import load_text_encoder
            encoder = load_text_encoder(model.config, path, options.pipeline, device, dtype, what=f"model {name}")
        min_steps = options.min_steps if options.min_steps is not None else max(1, options.steps // 2)
        return cls(name, model, limits=options.limits, default_steps=options.steps, min_steps=min_steps,
                   headroom=options.headroom, class_names=class_names_of(meta, model.num_classes), decode=decode,
                   text_encoder=encoder)

    # ------------------------------------------------------------------ requests -> jobs
    def _label(self, label, seed: int) -> int | None:
        if self.config.condition != "class":
            if label is not None:
                raise FieldError("label", "this model is unconditional; leave label out")
            return None
        if label is None:
            return seed % self.num_classes     # as `elit sample`: seed % num_classes
        if isinstance(label, str):
            lowered = [n.lower() for n in self.class_names]
            if label.lower() in lowered:
                return lowered.index(label.lower())
            if not label.strip().isdigit():
                raise FieldError("label", f"unknown class {label!r}; classes: {', '.join(self.class_names)}")
            label = int(label)
        if not 0 <= label < self.num_classes:
            raise FieldError("label", f"unknown class {label}; use 0..{self.num_classes - 1} or a class name")
        return label

    def _prompts(self, req: ImageRequest, images: int, guided: bool) -> Prompts:
        """A text request's prompt (and negative prompt), checked and encoded once, one row per image."""
        from elit.sampling.prompts import check_prompt
        if req.label is not None:
            raise FieldError("label", "this model is text-conditioned; give `prompt` (the text to draw) instead")
        if req.prompt is None:
            raise FieldError("prompt", "this model is text-conditioned: give a prompt, the text the image should show")
        if req.negative_prompt is not None and req.guidance not in ("cfg", "ccfg"):
            raise FieldError("negative_prompt", f"the negative prompt is the unconditional input of cfg / ccfg; guidance "
                                                f"{req.guidance!r} has none: give guidance cfg or ccfg, or leave it out")
        for field, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt)):
            if text is None:
                continue
            if len(text) > self.limits.max_prompt_chars:
                raise FieldError(field, f"{len(text)} characters exceed this server's cap of "
                                        f"{self.limits.max_prompt_chars}")
            try:
                self.text_encoder.check(check_prompt(text, "prompt" if field == "prompt" else "negative prompt"))
            except UserError as e:
                raise FieldError(field, str(e)) from None
        rows = [req.prompt] + ([req.negative_prompt or ""] if guided else [])   # one call: one length
        both = self.text_encoder.encode(rows)
        return Prompts(both[0].repeat(images), both[1].repeat(images) if guided else None)

    def make_job(self, req: ImageRequest):
        """Check a parsed request against the model and the caps; the scheduler job, not yet queued."""
        lim = self.limits
        arrival = self.scheduler.clock()    # a text request's encoding counts against its deadline
        if self.text_encoder is None:
            for field in ("prompt", "negative_prompt"):
                if getattr(req, field) is not None:
                    kind = "class-conditional" if self.config.condition == "class" else "unconditional"
                    raise FieldError(field, f"this model is {kind} and takes no text"
                                     + ("; give `label` instead" if self.config.condition == "class" else ""))
        if not 1 <= req.num_images <= lim.max_images:
            raise FieldError("num_images", f"must lie in 1..{lim.max_images} (this server's cap), got {req.num_images}")
        if req.seed < 0 or req.seed + req.num_images - 1 > lim.max_seed:
            raise FieldError("seed", f"seeds must lie in 0..{lim.max_seed}; got {req.seed}"
                             + (f" with {req.num_images} images" if req.num_images > 1 else ""))
        steps = self.default_steps if req.steps is None else req.steps
        if not 1 <= steps <= lim.max_steps:
            raise FieldError("steps", f"must lie in 1..{lim.max_steps} (this server's cap), got {steps}")
        if req.budget is not None and req.deadline_ms is not None:
            raise FieldError("deadline_ms", "give either budget or deadline_ms, not both")
        budget = None if req.budget in (None, "full") else req.budget
        if budget is not None and budget not in self.budgets:
            valid = f"{self.budgets[0]}..{self.budgets[-1]} or \"full\"" if self.budgets else "only \"full\" (a plain model)"
            raise FieldError("budget", f"{budget} is out of range: this model takes {valid}; or give deadline_ms")
        if req.deadline_ms is not None and not (math.isfinite(req.deadline_ms) and 0 < req.deadline_ms <= lim.max_deadline_ms):
            raise FieldError("deadline_ms", f"must be a number in (0, {lim.max_deadline_ms:g}], got {req.deadline_ms}")
        if req.scale is not None and not (math.isfinite(req.scale) and 0 <= req.scale <= lim.max_scale):
            raise FieldError("scale", f"must lie in [0, {lim.max_scale:g}] (lambda: 0 = no guidance, w = 1 + lambda; "
                                      f"this server's cap), got {req.scale:g}")
        if req.weak_budget is not None and req.weak_budget not in self.budgets:
            raise FieldError("weak_budget", f"{req.weak_budget} is not a budget of this model ({self.budgets})")
        seeds = list(range(req.seed, req.seed + req.num_images))
        scale = req.scale if req.scale is not None or req.guidance == "none" else 1.0
        text_tokens = None
        if self.text_encoder is not None:
            labels = self._prompts(req, len(seeds), req.guidance in ("cfg", "ccfg") and bool(scale))
            text_tokens = labels.cond.tokens
        else:
            labels = [self._label(req.label, s) for s in seeds]
            labels = labels if self.config.condition == "class" else None
        settings = Settings(steps, req.sampler, req.guidance, scale, req.weak_budget, text_tokens)
        try:
            options = self.ladder.elastic(settings) if req.deadline_ms is not None else self.ladder.fixed(settings, budget)
        except UserError as e:
            field = "weak_budget" if "weak" in str(e) else "guidance"
            raise FieldError(field, str(e)) from None
        return self.scheduler.new_job(settings, seeds, labels, options, req.deadline_ms, arrival=arrival)

    # ------------------------------------------------------------------ the worker's work
    def run_batch(self, settings: Settings, option: Option, seeds, labels):
        from elit.sampling import sample_batch
        from elit.viz import to_uint8
        import torch
        negative = None
        if isinstance(labels, Prompts):
            labels, negative = labels.cond, labels.negative
        images = sample_batch(self.model, seeds, labels, self.ladder.plan(settings, option), negative=negative)
        images = self.decode(images) if self.decode is not None else images
        if not bool(torch.isfinite(images).all()):   # else to_uint8 draws NaN as an all-black PNG, answered 200
            if settings.guidance != "none" and settings.scale:
                raise FieldError("scale", f"the guided samples overflowed to NaN/Inf at scale {settings.scale:g}; "
                                          f"use a smaller scale")
            raise RuntimeError("the model produced NaN/Inf samples: its weights are broken or overflow")
        return to_uint8(images)

    # ------------------------------------------------------------------ what /v1/models says
    def option(self, guidance: str, budget, steps: int | None = None) -> Option | None:
        """How an unguided / guided (lambda = 1) request at `budget` runs, None if it cannot."""
        settings = Settings(steps or self.default_steps, "euler", guidance, None if guidance == "none" else 1.0)
        try:
            return self.ladder.fixed(settings, budget)[0]
        except UserError:
            return None

    def info(self) -> dict:
        from elit.cost import analytic_gflops
        modes = [g for g in GUIDANCE_MODES if self.config.conditional or g in ("none", "ag")]
        rows = []
        for b in self.budgets or [None]:
            options = {g: self.option(g, b) for g in modes}
            rows.append({"budget": b, "gflops_per_forward": round(analytic_gflops(self.config, b), 4),
                         "gflops_per_image": {g: o and round(o.cost.gflops_per_image, 4) for g, o in options.items()},
                         "predicted_seconds": {g: o and self.cost.seconds(o.cost, 1) for g, o in options.items()}})
        backbone = self.config.backbone
        text = None if self.text_encoder is None else {
            "encoder": self.text_encoder.describe(), "max_prompt_chars": self.limits.max_prompt_chars,
            "tokens_assumed": backbone.text_tokens}   # the length the GFLOPs and seconds above assume
        return {"name": self.name, "backbone": backbone.name, "elastic": bool(self.budgets),
                "condition": self.config.condition, "text": text,
                "image_shape": list(self.model.sample_shape()), "budgets": rows,
                "classes": [{"id": i, "name": n} for i, n in enumerate(self.class_names)],
                "defaults": {"steps": self.default_steps, "min_steps": min(self.ladder.steps_ladder(self.default_steps)),
                             "guidance": "none", "scale": 1.0,
                             "weak_budget": self.budgets[0] if self.budgets else None, "budget": "full"},
                "guidance_modes": modes,
                "limits": self.limits.to_dict(), "cost_model": self.cost.to_dict(), "calibration": self.calibration,
                "replica": self.replica}
