"""Training metrics: the per-interval statistics (loss per t-bin and per budget, summed over ranks)
and their sinks (DIR/log.jsonl, optionally TensorBoard). Only rank 0 writes."""
from __future__ import annotations

import json
import pathlib

import torch

from elit.flow import t_bin_index
from elit.train.distributed import all_reduce_sum


class LossStats:
    """Sums of per-sample losses and counts since the last log, kept on the device so logging costs
    one collective and one host sync per interval, not per step."""

    def __init__(self, t_bins: int, budgets: list, device):
        self.t_bins, self.budgets = t_bins, list(budgets)
        # layout: [t-bin sums | t-bin counts | budget sums | budget counts | budget checksum, its square]
        self.values = torch.zeros(2 * t_bins + 2 * len(self.budgets) + 2, dtype=torch.float64, device=device)
        self.checksum = 0

    def add(self, step: int, per_sample: torch.Tensor, t: torch.Tensor, budget) -> None:
        loss = per_sample.detach().double()
        bins = t_bin_index(t, self.t_bins)
        nb, v = len(self.budgets), self.values
        v[: self.t_bins].index_add_(0, bins, loss)
        v[self.t_bins: 2 * self.t_bins].index_add_(0, bins, torch.ones_like(loss))
        j = self.budgets.index(budget)
        v[2 * self.t_bins + j] += loss.sum()
        v[2 * self.t_bins + nb + j] += loss.numel()
        # A step-dependent fingerprint of the budgets this rank drew (checked equal across ranks).
        self.checksum = (self.checksum + (step % 9973 + 1) * (j + 1)) % 1_000_003  # c^2 exact in float64

    def reduce(self, world_size: int) -> dict:
        """Global statistics (a collective). Verifies every rank drew the same budgets: the sums of
        c and c^2 over ranks equal K*c0 and K*c0^2 only if all c_r are equal."""
        nb, tb = len(self.budgets), self.t_bins
        c = float(self.checksum)
        self.values[-2], self.values[-1] = c, c * c
        v = all_reduce_sum(self.values.clone()).cpu().tolist()
        if world_size > 1 and (v[-2] != world_size * c or v[-1] != world_size * c * c):
            raise RuntimeError("ranks drew different training budgets; the budget draw must be rank-independent")
        sums, counts = v[:tb], v[tb: 2 * tb]
        bsum, bcount = v[2 * tb: 2 * tb + nb], v[2 * tb + nb: 2 * tb + 2 * nb]
        total = sum(counts)
        out = {"loss": sum(sums) / max(total, 1),
               "loss_t": {f"{i / tb:.2f}-{(i + 1) / tb:.2f}": s / n for i, (s, n) in enumerate(zip(sums, counts)) if n},
               "loss_budget": {str(b if b is not None else "full"): s / n
                               for b, s, n in zip(self.budgets, bsum, bcount) if n}}
        self.values.zero_()
        self.checksum = 0
        return out


class RunLog:
    def __init__(self, out, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = pathlib.Path(out) / "log.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(pathlib.Path(out) / "tensorboard"))
            except ImportError:
                print("elit train: log.tensorboard=true but tensorboard is not installed; logging to log.jsonl only")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record["step"]
            for key, value in record.items():
                if isinstance(value, dict):
                    for sub, v in value.items():
                        self.writer.add_scalar(f"{key}/{sub}", v, step)
                elif isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
