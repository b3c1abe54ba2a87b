"""The training loop: rectified flow, multi-budget draws, AdamW + warm-up, EMA, bf16, DDP/FSDP2,
atomic resumable checkpoints, JSONL/TensorBoard logs, sample grids, export of the EMA model.

Reproducibility: every random draw of step s (noise, t, class dropout, budget) comes from a stream
seeded by (seed, s), drawn for the *global* batch and sliced for this rank exactly as the data
sampler shards items (rank r holds global positions r, r+K, ...). So a resumed run repeats an
uninterrupted one bit for bit on the CPU, and K ranks with batch b compute what one rank with batch
K*b computes, up to float summation order.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import pathlib
import sys
import time

import torch
from tqdm import tqdm

from elit._io import write_text
from elit._lock import exclusive_output
from elit._precision import resolve_precision
from elit._threads import ThroughputWatch, set_run_threads
from elit.data import build_dataset, infinite_batches
from elit.data.seeding import derive_seed
from elit.errors import UserError
from elit.flow import TimeSampler, flow_loss
from elit.hub import save_pretrained
from elit.model import ELITModel, ModelConfig, TextCondition, compile_blocks
from elit.model.grouping import check_grid
from elit.train import distributed as D
from elit.train.budgets import TrainingBudgets
from elit.train.checkpoint import list_checkpoints, newest_checkpoint, remove_stale_temporaries, save_checkpoint
from elit.train.config import RunConfig, config_differences, dump_config, model_config, train_section
from elit.train.ema import EMA
from elit.train.logger import LossStats, RunLog
from elit.train.run_folder import check_run_folder, truncate_log
from elit.train.samples import write_budget_grid
from elit.train.stop import StopRequest

_NOISE_STREAM = 0x5EED  # per-step stream for eps, t and class dropout


def check_model_fits_data(model: ModelConfig, dataset) -> None:
    """Refuse, before any compute, a model that cannot train on this data."""
    shape, b = tuple(dataset.image_shape), model.backbone
    expected = b.input_shape()
    fix = "change the model.* keys or pick a config made for this data"
    if len(shape) != len(expected):
        kind = {3: "images (C, H, W)", 4: "clips (C, T, H, W)"}
        raise UserError(f"the data holds {kind.get(len(shape), shape)} but backbone {b.name!r} takes "
                        f"{kind.get(len(expected), expected)}; pick a model for this data ({fix})")
    C, H, W = shape[0], shape[-2], shape[-1]
    if C != b.in_channels:
        raise UserError(f"the data has {C} channels but model.in_channels={b.in_channels}; "
                        f"set model.in_channels={C} ({fix})")
    if len(shape) == 4 and shape[1] != expected[1]:
        raise UserError(f"the clips have {shape[1]} frames but model.frames={expected[1]}; "
                        f"set model.frames={shape[1]} ({fix})")
    if hasattr(b, "width"):   # a backbone built for H x W latents (Wan)
        if (H, W) != tuple(expected[-2:]):
            raise UserError(f"the data is {H}x{W} but the model takes {expected[-2]}x{expected[-1]}; "
                            f"set model.input_size={H} model.width={W} ({fix})")
    elif H != W:
        raise UserError(f"the data is {H}x{W}; only square inputs are supported")
    elif H != b.input_size:
        raise UserError(f"the data is {H}x{W} but model.input_size={b.input_size}; "
                        f"set model.input_size={H} ({fix})")
    if model.elastic:
        check_grid(model.grid, model.window)   # ModelConfig checked it at the build size, which is H
    text_data = hasattr(dataset, "condition")
    if text_data != (model.condition == "text"):
        what = "captioned latents (text-latents)" if text_data else "class-labelled images"
        raise UserError(f"the data holds {what} but backbone {b.name!r} takes "
                        f"{'text' if not text_data else 'class labels'}; pick a model for this data ({fix})")
    if b.num_classes not in (0, dataset.num_classes):
        raise UserError(f"the data has {dataset.num_classes} classes but model.num_classes={b.num_classes}; "
                        f"set model.num_classes={dataset.num_classes} (or 0 for an unconditional model)")


def _lr_lambda(cfg):
    t = cfg.train

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else 1.0
        if t.lr_schedule == "cosine":
            progress = min(1.0, step / max(1, t.max_steps))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm
    return factor


class TrainingDiverged(UserError):
    """The loss or gradient norm stayed NaN/Inf: the settings, not the code, need changing."""


class Trainer:
    def __init__(self, cfg: RunConfig, out, env: D.DistEnv):
        self.cfg, self.env, self.out = cfg, env, pathlib.Path(out)
        sy, tr = cfg.system, cfg.train
        # The run's newest checkpoint, read first: a resume that cannot work is refused by its real
        # reason (another model, a step beyond max_steps) before anything derived from them is checked.
        self.previous = newest_checkpoint(self.out)
        if self.previous is not None:
            self._check_resumable(*self.previous)
        if env.device.type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
            recorded = self.previous[1].get("threads") if self.previous is not None else None
            set_run_threads(sy.threads, recorded, local, announce=(lambda text: print(f"elit train: {text}"))
                            if env.is_main else None)
        if env.device.type == "cuda" and sy.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = resolve_precision(sy.precision, env.device, announce=(lambda text: print(f"elit train: {text}"))
                                     if env.is_main else None, what="system.precision") == "bf16"
        if tr.global_batch_size % env.world_size:
            raise UserError(f"train.global_batch_size={tr.global_batch_size} is not divisible by the "
                             f"{env.world_size} processes")
        # A null key means "not given" (so a preset's `root: null` can be left for the command line).
        self.dataset = build_dataset({k: v for k, v in cfg.data.items() if v is not None})
        check_model_fits_data(cfg.model, self.dataset)

        torch.manual_seed(tr.seed)  # identical init on every rank (FSDP2 does not broadcast weights)
        model = self.build_model().to(env.device)
        model.grad_checkpointing = sy.grad_checkpointing
        model.check_values = False   # t and y come from this trainer, not from a user
        self.budget_draws = TrainingBudgets(tr.budget_draw, model.budget_space, tr.seed, tr.budget_min, tr.budget_max)
        self.null_class = model.null_class_id
        for b in cfg.log.sample_budgets or []:  # fail now, not after hours of training
            try:
                model.resolve_budget(b)
            except ValueError as e:
                raise UserError(f"log.sample_budgets: {e}") from None
        self.wrapped = D.wrap_model(model, sy.parallel, env)
        self.model = model  # parameter names are those of the bare model under DDP and FSDP2 alike
        if sy.compile:   # the repeated blocks, dynamic in length: every trained budget shares their graphs
            compile_blocks(model)
        self.ema = EMA(model, tr.ema_decay)
        # On CUDA the fused AdamW (one kernel per step for all parameters); elsewhere torch's default.
        # A resumed run keeps the implementation its checkpoint was written with (the state dict holds it).
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=tr.lr, betas=tuple(tr.betas),
                                           weight_decay=tr.weight_decay,
                                           **({"fused": True} if env.device.type == "cuda" else {}))
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        self.loader = infinite_batches(self.dataset, tr.global_batch_size // env.world_size, seed=tr.seed,
                                       rank=env.rank, world_size=env.world_size, num_workers=sy.num_workers,
                                       pin_memory=env.device.type == "cuda")
        self.time_sampler = TimeSampler(tr.time_distribution, tr.time_mean, tr.time_std, tr.time_shift)
        self.step = 0
        self.resumed_at = None       # the step this process resumed from, if it did
        self.nonfinite = []          # steps in the current streak of NaN/Inf loss or gradient norm
        self.stopped: str | None = None   # the signal that ended the run early (elit.train.stop)
        self.log = RunLog(self.out, env.is_main, cfg.log.tensorboard)

    # ------------------------------------------------------------------ what a subclass may change
    # (elit finetune, elit.train.finetune: a student built from a teacher, a distillation loss)
    def build_model(self) -> ELITModel:
        return ELITModel(self.cfg.model)

    def batch_condition(self, y, drop: torch.Tensor):
        """The batch's condition on the device: dropped labels become the null class; captioned data
        (a dict of text-encoder tensors) becomes a TextCondition with dropped captions nulled."""
        if isinstance(y, dict):
            cond = TextCondition(**{k: v.to(drop.device, non_blocking=True) for k, v in y.items()})
            return cond.where(drop, self.model.null_condition(cond))
        if self.cfg.model.condition == "class":
            return torch.where(drop, torch.full_like(y, self.null_class), y.to(drop.device))
        return None

    def grid_labels(self):
        """Columns of the sample grids: None (class seed % num_classes), or for captioned data a
        TextCondition of its first captions."""
        if not hasattr(self.dataset, "condition"):
            return None
        rows = [self.dataset.condition(k) for k in range(min(self.cfg.log.sample_per_row, self.dataset.num_captions))]
        return TextCondition(**{k: torch.stack([r[k] for r in rows]) for k in rows[0]})

    def loss(self, x, y, t, eps, budget) -> torch.Tensor:
        """Per-sample training loss, shape (B,)."""
        return flow_loss(self.wrapped, x, y, t, eps, budget=budget)

    def log_terms(self) -> dict:
        """Extra fields for the next log record (averages since the last one)."""
        return {}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        """Full training state (collectives under FSDP: every rank calls it)."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": D.model_state(self.model), "ema": self.ema.full_state(),
                "optimizer": D.optimizer_state(self.model, self.optimizer),
                "scheduler": self.lr_schedule.state_dict(), "rng": rng, "data": self.loader.state_dict(),
                "fsdp": D.is_fsdp(self.model), "config": self.cfg.to_dict(),
                "threads": torch.get_num_threads()}   # a resume keeps it (see set_run_threads)

    def save(self) -> None:
        state = self.state()
        if self.env.is_main:
            save_checkpoint(self.out, self.step, state, self.cfg.log.keep_last)
        D.barrier()

    def _check_resumable(self, path: pathlib.Path, ckpt: dict) -> None:
        old, new = model_config(ckpt["config"]["model"]).to_dict(), self.cfg.model.to_dict()   # any spelling
        if old != new:
            raise UserError(f"{self.out} holds a run of a different model ({'; '.join(config_differences(old, new, 'model.'))}); "
                             f"restore those model settings to resume, or use a new --out to start a new run")
        step, wanted = int(ckpt["step"]), self.cfg.train.max_steps
        if wanted < step:   # else the exported config would say max_steps beside a later step
            raise UserError(f"{self.out} is at step {step} already ({path.name}); train.max_steps={wanted} is below "
                             f"it: give --max-steps {step} or more to go on, or use a new --out")

    def resume(self) -> bool:
        if self.previous is None:
            return False
        (path, ckpt), self.previous = self.previous, None   # the loaded state is not kept beyond the resume
        if ckpt["fsdp"] != D.is_fsdp(self.model):
            was = "fsdp" if ckpt["fsdp"] else "ddp/single-process"
            raise UserError(f"checkpoint {path.name} was written by a {was} run; resume it with the same "
                             f"system.parallel setting")
        saved = {**ckpt["config"], "train": train_section(ckpt["config"]["train"])}   # any version's names
        changed = {section: config_differences(saved[section], self.cfg.to_dict()[section])
                   for section in ("train", "data")}
        D.load_model_state(self.model, ckpt["model"])
        self.ema.load_full_state(ckpt["ema"])
        D.load_optimizer_state(self.model, self.optimizer, ckpt["optimizer"])
        self.lr_schedule.load_state_dict(ckpt["scheduler"])
        self._apply_optimizer_settings()
        self.loader.load_state_dict(ckpt["data"])
        torch.set_rng_state(ckpt["rng"]["cpu"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        self.step = self.resumed_at = int(ckpt["step"])
        if self.env.is_main:
            for section, diff in changed.items():
                if diff:   # every train setting is read afresh from the config; none is kept from the checkpoint
                    print(f"elit train: resuming with changed {section} settings, applied from step {self.step}: "
                          f"{'; '.join(diff)}")
            print(f"elit train: resumed from {path} (step {self.step})")
        return True

    def _apply_optimizer_settings(self) -> None:
        """The optimiser's state dict brings the old run's lr, betas and weight decay, and the
        scheduler's its base lr: replace them with this config's, so a changed setting takes effect.
        (The warm-up / cosine factor and the clip are read from this config at every step.)"""
        tr = self.cfg.train
        factor = self.lr_schedule.lr_lambdas[0](self.lr_schedule.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=tr.lr, lr=tr.lr * factor, betas=tuple(tr.betas), weight_decay=tr.weight_decay)
        self.lr_schedule.base_lrs = [tr.lr] * len(self.optimizer.param_groups)

    # ------------------------------------------------------------------ one step
    def train_step(self, x: torch.Tensor, y: torch.Tensor):
        env, tr = self.env, self.cfg.train
        dev = env.device
        x = x.to(dev, torch.float32, non_blocking=True)
        budget = self.budget_draws(self.step)
        g = torch.Generator(dev).manual_seed(derive_seed(tr.seed, self.step, _NOISE_STREAM))
        n = tr.global_batch_size  # draw for the global batch, keep this rank's positions
        eps = torch.randn((n, *x.shape[1:]), generator=g, device=dev)
        t = self.time_sampler(n, g, dev)
        drop = torch.rand(n, generator=g, device=dev) < tr.class_dropout_prob
        mine = slice(env.rank, None, env.world_size)
        eps, t, drop = eps[mine], t[mine], drop[mine]
        y = self.batch_condition(y, drop)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            per_sample = self.loss(x, y, t, eps, budget)
        self.optimizer.zero_grad(set_to_none=True)
        per_sample.mean().backward()
        # The norm is needed anyway to notice divergence; an infinite max_norm leaves the gradients as they are.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   tr.grad_clip if tr.grad_clip > 0 else math.inf)
        # The global gradient norm (gradients are reduced over ranks) is NaN/Inf whenever any rank's
        # loss is, so every rank takes the same decision. One host sync per step.
        if bool(torch.isfinite(D.full_tensor(grad_norm))):
            self.nonfinite = []
            self.optimizer.step()
            self.ema.update(self.model)
        else:   # skip the update, so the weights stay those of the last good step
            self.nonfinite.append(self.step + 1)
            self._check_divergence()
        self.lr_schedule.step()
        return per_sample, t, budget, grad_norm

    def _check_divergence(self) -> None:
        tr = self.cfg.train
        if len(self.nonfinite) <= tr.max_nonfinite_steps:
            if self.env.is_main:
                print(f"elit train: step {self.nonfinite[-1]}: loss or gradient norm is NaN/Inf; update skipped "
                      f"({len(self.nonfinite)} in a row, stopping after {tr.max_nonfinite_steps})", file=sys.stderr)
            return
        found = list_checkpoints(self.out)
        kept, then = ((f"the last checkpoint, {found[-1]}, is kept", "resumes from it") if found
                      else ("no checkpoint was written yet", "starts over"))
        clip = f"train.grad_clip={tr.grad_clip:g}" if tr.grad_clip > 0 else "train.grad_clip=1 (now off)"
        raise TrainingDiverged(
            f"training diverged: the loss or gradient norm was NaN/Inf at steps {self.nonfinite[0]}-{self.nonfinite[-1]} "
            f"({len(self.nonfinite)} in a row); {kept} and no model was exported. Lower train.lr (now {tr.lr:g}), "
            f"set {clip}, or raise train.warmup_steps (now {tr.warmup_steps}); the same command with those "
            f"overrides {then}")

    # ------------------------------------------------------------------ loop
    def sample_grid(self) -> pathlib.Path | None:
        ema = self.ema.full_state()  # collective under FSDP
        path = None
        channels = self.cfg.model.backbone.in_channels
        if self.env.is_main and channels not in (1, 3):   # latents: a grid needs the VAE (elit sample --vae)
            print(f"elit train: no sample grid ({channels}-channel latents are not images)")
        elif self.env.is_main:
            model = self.ema_model(ema)
            lg = self.cfg.log
            path = self.out / "samples" / f"step-{self.step:07d}.png"
            labels = self.grid_labels()
            try:
                if labels is None:
                    write_budget_grid(model, path, lg.sample_budgets, lg.sample_steps, lg.sample_per_row,
                                      class_names=getattr(self.dataset, "class_names", None))
                else:
                    write_budget_grid(model, path, lg.sample_budgets, lg.sample_steps, len(labels), labels=labels,
                                      captions=self.dataset.captions()[:len(labels)])
            except ImportError as e:  # the sampler is an optional part of a partial install
                print(f"elit train: no sample grid ({e})")
                path = None
        D.barrier()
        return path

    def ema_model(self, ema_state: dict) -> ELITModel:
        """The model with the EMA weights; persistent buffers, which the EMA does not average (SD3's
        sin-cos table), come from the trained model."""
        with torch.device("meta"):
            model = ELITModel(self.cfg.model)
        buffers = {k: v.detach() for k, v in self.model.state_dict().items() if k not in ema_state}
        model.load_state_dict({**buffers, **ema_state}, assign=True)
        return model.to(self.env.device).eval()

    def run(self) -> dict:
        """Resume or start the run in its folder, train to max_steps, export the EMA model."""
        self.open_run_folder()
        grid = self.train_loop()
        # stopped by a signal: a checkpoint, no model (the run is unfinished; the same command resumes it)
        model_dir = None if self.stopped else self.export_model()
        self.log.close()
        D.barrier()
        return {"step": self.step, "out": str(self.out), "model": model_dir and str(model_dir),
                "grid": grid and str(grid), "stopped": self.stopped, "is_main": self.env.is_main}

    def open_run_folder(self) -> None:
        """The folder made and cleaned, the last checkpoint resumed (a mismatched run is refused before
        anything in it is rewritten), the log cut back to the checkpoint, the config written."""
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out)
        D.barrier()
        self.resume()
        if self.env.is_main:
            truncate_log(self.log.path, self.step)   # records after the checkpoint are written again
            write_text(self.out / "config.yaml", dump_config(self.cfg))

    def train_loop(self) -> pathlib.Path | None:
        """Steps to max_steps, with log records, checkpoints and sample grids on their schedules;
        returns the last grid written. SIGTERM / SIGINT ends it early, with a checkpoint (elit.train.stop)."""
        tr, lg = self.cfg.train, self.cfg.log
        stats = LossStats(lg.t_bins, self.budget_draws.choices, self.env.device)
        bar = tqdm(total=tr.max_steps, initial=self.step, disable=not (self.env.is_main and lg.progress),
                   desc="train", unit="step", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line per 30 s
        batches = iter(self.loader)
        self.throughput = Throughput()
        self.wrapped.train()
        with StopRequest() as stop:
            grid = self._steps(stats, bar, batches, stop)
        bar.close()
        return grid

    def _steps(self, stats: LossStats, bar, batches, stop: StopRequest) -> pathlib.Path | None:
        tr, lg = self.cfg.train, self.cfg.log
        grid = None
        while self.step < tr.max_steps:
            x, y = next(batches)
            per_sample, t, budget, grad_norm = self.train_step(x, y)
            stats.add(self.step, per_sample, t, budget)
            self.step += 1
            self.throughput.add_step()
            bar.update(1)
            last = self.step == tr.max_steps
            if self.step % lg.log_every == 0 or last:
                self.write_record(stats, budget, grad_norm, bar)
            if last or (self.step % lg.ckpt_every == 0 and not self.nonfinite):
                self.save()   # not during a NaN/Inf streak: it could push the last good checkpoint out
            if (lg.sample_every and self.step % lg.sample_every == 0) or last:
                grid = self.sample_grid()
            if self.step % lg.ckpt_every == 0 or last or (lg.sample_every and self.step % lg.sample_every == 0):
                self.throughput.restart()   # throughput excludes checkpoint and sampling time
            if not last and stop.agreed(self.env.device):   # a collective: every rank, every step
                self.stop_with_checkpoint(stop.signal_name)
                break
        return grid

    def stop_with_checkpoint(self, signal_name: str) -> None:
        """The checkpoint of this step (unless the schedule wrote it already, or a NaN/Inf streak
        runs: then the last good one stays), and what the user does next."""
        self.stopped = signal_name
        if self.step % self.cfg.log.ckpt_every and not self.nonfinite:
            self.save()
        if self.env.is_main:
            newest = list_checkpoints(self.out) if self.nonfinite else None
            what = (f"with a checkpoint at step {self.step}" if not self.nonfinite else
                    f"during a NaN/Inf streak, so without a new checkpoint (the newest is "
                    f"{newest[-1].name if newest else 'none'})")
            print(f"elit train: {signal_name}: stopped at step {self.step} of {self.cfg.train.max_steps} {what}; "
                  f"rerun the same command to resume", file=sys.stderr, flush=True)

    def write_record(self, stats: LossStats, budget, grad_norm, bar) -> None:
        """One log record: the losses averaged since the last one, lr, throughput, budget, gradient norm."""
        tr, th = self.cfg.train, self.throughput
        record = stats.reduce(self.env.world_size)  # collective
        # steps_averaged: the steps this record's losses average (fewer than log_every in the first
        # record after a resume, which starts a fresh average at the checkpoint).
        record = {"step": self.step, **record, "steps_averaged": th.averaged,
                  "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": th.images_per_s(tr.global_batch_size),
                  "budget": budget, "grad_norm": float(D.full_tensor(grad_norm)), **self.log_terms()}
        if self.resumed_at is not None and self.step - th.averaged == self.resumed_at:
            record["first_after_resume_at"] = self.resumed_at
        self.log.write(record)
        slow = th.watch.update(record["images_per_s"])
        bar.set_postfix(loss=f"{record['loss']:.4f}", budget=budget, img_s=f"{record['images_per_s']:.0f}",
                        **({"SLOW": slow} if slow else {}))
        if slow and not self.cfg.log.progress and self.env.is_main:
            print(f"elit train: step {self.step}: {record['images_per_s']:.1f} images/s, {slow}", file=sys.stderr)
        th.restart(averaged=True)

    def export_model(self) -> pathlib.Path:
        """The EMA weights as a model folder (elit.save_pretrained), with the run's config and class names."""
        cfg, tr = self.cfg, self.cfg.train
        ema = self.ema.full_state()   # collective under FSDP
        model_dir = self.out / "model"
        if self.env.is_main:
            bad = [n for n, v in ema.items() if not bool(torch.isfinite(v).all())]
            if bad:   # cannot happen while non-finite updates are skipped; never export such a model
                raise TrainingDiverged(f"the EMA weights hold NaN/Inf ({', '.join(bad[:3])}); no model exported")
            names = list(getattr(self.dataset, "class_names", None) or [])
            save_pretrained(self.ema_model(ema), model_dir,
                            extra={"training": {"step": self.step, "ema_decay": tr.ema_decay, "config": cfg.to_dict()},
                                   **({"class_names": names} if len(names) == cfg.model.backbone.num_classes else {})})
        return model_dir


class Throughput:
    """Images per second between log records (checkpoint and sampling time left out), and the
    watch that flags a collapse."""

    def __init__(self):
        self.watch = ThroughputWatch()
        self.averaged = 0          # steps in the loss average of the next record
        self.restart()

    def restart(self, averaged: bool = False) -> None:
        self.tick, self.steps = time.perf_counter(), 0
        if averaged:
            self.averaged = 0

    def add_step(self) -> None:
        self.steps += 1
        self.averaged += 1

    def images_per_s(self, batch: int) -> float:
        return self.steps * batch / (time.perf_counter() - self.tick)


def train(cfg: RunConfig, out) -> dict:
    """Train (or resume) the run in folder `out`; returns {'step', 'out', 'model', 'grid'}.
    Launch under torchrun for DDP/FSDP; a single process otherwise."""
    env = D.init_distributed(cfg.system.device)
    try:
        with contextlib.ExitStack() as stack:
            if env.is_main:   # one process per run folder; then nothing in it is touched before the checks
                stack.enter_context(exclusive_output(out, "elit train"))
                check_run_folder(out, cfg.to_dict())
            trainer = Trainer(cfg, out, env)
            result = trainer.run()
    except BaseException:
        D.abort()  # no barrier: the other ranks may be stuck or gone
        raise
    del trainer  # free the model before tearing the process group down
    gc.collect()
    D.shutdown()
    return result
