"""The arithmetic of the model's passes: fp32, or bf16 autocast where the hardware does bf16 natively
and it is measured to pay off for this model (`--precision {auto,fp32,bf16}`, system.precision).

Why auto is not "bf16 wherever torch accepts it": on a CPU without AVX512-BF16 or AMX, torch still
runs bf16 autocast by converting in software, which is slower than fp32; and on a tiny model (width
64) the casts cost more than the matrix products save even with native bf16 (1.5x slower, issue 28).
So auto takes bf16 only on native hardware, and on a CPU only when a timed probe of this model at
this batch finds it at least MIN_SPEEDUP times faster. Only the network's passes are autocast: the
sampler integrates in fp32, and a pass returns its output in the input's dtype.
"""
from __future__ import annotations

import functools
import statistics
import time

from elit.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
MIN_SPEEDUP = 1.10      # below it the probe's own noise could pick the slower one


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device) -> str | None:
    """What does bf16 natively on `device` ("AMX-BF16", "AVX512-BF16", "CUDA sm_90"), or None."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"CUDA sm_{major}{minor}" if major >= 8 else None     # Ampere and later
    if device.type == "cpu":
        flags = cpu_flags()
        for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
            if flag in flags:
                return name
    return None


def check_precision(value: str, what: str = "--precision") -> str:
    if value not in PRECISIONS:
        raise UserError(f"{what} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve_precision(requested: str, device, probe=None, announce=None, what: str = "--precision") -> str:
    """'fp32' or 'bf16' for `requested`. auto: fp32 without native bf16; bf16 on a GPU that has it;
    on a CPU that has it, bf16 if `probe()` (fp32 time / bf16 time) >= MIN_SPEEDUP, fp32 without a
    probe (training). `announce(text)` is told the choice and why, once."""
    import torch
    check_precision(requested, what)
    device = torch.device(device)
    native = native_bf16(device)
    say = announce or (lambda text: None)
    if requested == "fp32":
        say(f"precision fp32 ({what} fp32)")
        return "fp32"
    if requested == "bf16":
        say(f"precision bf16 autocast ({what} bf16" + (")" if native else
            f"; emulated: this {device.type.upper()} has no native bf16 (AVX512-BF16 / AMX, or a GPU of sm_80+), "
            f"so expect it slower than fp32)"))
        return "bf16"
    if native is None:
        say(f"precision fp32 (auto: no native bf16 on this {device.type.upper()}; {what} bf16 would be emulated)")
        return "fp32"
    if device.type != "cpu":
        say(f"precision bf16 autocast (auto: {native})")
        return "bf16"
    if probe is None:      # training: one forward's timing says little of the loss curve's cost
        say(f"precision fp32 (auto: {native} is here, but auto trains in bf16 on a GPU only; {what} bf16 asks)")
        return "fp32"
    speedup = probe()
    choice = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    say(f"precision {'bf16 autocast' if choice == 'bf16' else 'fp32'} (auto: {native}; a bf16 pass of this model "
        f"measured {speedup:.2f}x as fast as fp32, {'at least' if choice == 'bf16' else 'under'} {MIN_SPEEDUP}x)")
    return choice


def probe_speedup(model, batch: int, repeats: int = 3) -> float:
    """fp32 time / bf16-autocast time of one full-budget forward of `model` at `batch` (the median
    of `repeats` after one warm-up each)."""
    import torch
    param = next(model.parameters())
    x = torch.randn(batch, *model.sample_shape(), device=param.device, dtype=param.dtype)
    y = model.backbone.example_condition(batch, param.device)
    before = getattr(model, "compute_precision", "fp32")

    def timed(precision):
        model.compute_precision = precision
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(x, 0.5, y)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])
    try:
        with torch.no_grad():
            return timed("fp32") / timed("bf16")
    finally:
        model.compute_precision = before


def set_model_precision(model, requested: str, batch: int, announce=None, what: str = "--precision") -> str:
    """Resolve `requested` for `model` on its device (probing at `batch` where auto needs it) and set
    it as the model's compute precision; returns 'fp32' or 'bf16'."""
    device = next(model.parameters()).device
    choice = resolve_precision(requested, device, lambda: probe_speedup(model, batch), announce, what)
    model.compute_precision = choice
    return choice
