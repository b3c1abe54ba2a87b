"""Budget sweeps (`elit eval`): generate at each (budget, guidance, scale), measure, save rows.

Images stream from the sampler straight into the metric accumulators: nothing is written per
image. Reference statistics and feature networks are built once for the whole sweep. With
`--json OUT` every finished row is saved at once (atomically), and rerunning the same command
skips the rows already in OUT, so a long sweep resumes where it stopped.
"""
from __future__ import annotations

import json
import pathlib
import time

import torch

from elit._io import write_json
from elit.errors import UserError
from elit.eval.metrics.compute import METRIC_NET, NEEDS_FEATURES, compute_metrics, get_extractor, reference_stats

ROW_KEYS = ("model", "latents_per_group", "guidance", "scale", "weak_budget", "steps", "sampler")


def sweep_settings(budgets, guidances, scales, weak_budget, lowest_budget) -> list[dict]:
    """The (budget, guidance, scale, weak budget) rows of a sweep; impossible ones are left out.

    budgets [None] means a plain backbone: it gets no cheap CFG or autoguidance rows.
    """
    rows = []
    for b in budgets:
        for g in guidances:
            if b is None and g in ("ccfg", "ag"):
                continue
            if g == "none":
                rows.append(dict(latents_per_group=b, guidance="none", scale=0.0, weak_budget=None))
                continue
            weak = None
            if g in ("ccfg", "ag"):
                weak = weak_budget if weak_budget is not None else lowest_budget
                if b is not None and (weak > b or (g == "ag" and weak >= b)):
                    continue  # autoguidance needs a weaker pass; cheap CFG's weak pass can't exceed the main one
            for s in scales:
                rows.append(dict(latents_per_group=b, guidance=g, scale=float(s), weak_budget=weak))
    return rows


def evaluate_row(model, setting: dict, *, num: int, steps: int, sampler: str, metrics, refs, extractors,
                 batch_size: int, seed_start: int = 0, progress: bool = True, fd_method: str = "sqrtm",
                 decode=None, video_refs: dict | None = None, shards=None) -> dict | None:
    """Generate `num` images (seeds seed_start..) at one setting and measure them. `decode` turns a
    latent-space model's samples into pixels (elit.vae.LatentDecoder). A video model's clips are
    measured frame by frame with `metrics`, and with the temporal metrics of `video_refs` (see
    `prepare_video_reference`). Under torchrun (`shards`, see elit.sampling.distributed) every rank
    generates its batches and rank 0 measures them all; the other ranks return None."""
    from elit.sampling import sampling_gflops
    from elit.sampling.distributed import Shards
    from elit.viz import to_uint8

    seeds = list(range(seed_start, seed_start + num))
    options = dict(steps=steps, sampler=sampler, budget=setting["latents_per_group"], guidance=setting["guidance"],
                   scale=setting["scale"] if setting["guidance"] != "none" else None,
                   weak_budget=setting["weak_budget"])
    gen_seconds = 0.0
    temporal = None
    if video_refs is not None:
        from elit.eval.video import ClipStatistics
        temporal = ClipStatistics(video_refs["classifier"], video_refs["frames"], video_refs.get("i3d"))

    def batches():
        nonlocal gen_seconds
        it = shards.batches(model, seeds, None, batch_size=batch_size, progress=progress, **options)
        while True:
            start = time.perf_counter()
            try:
                _, labels, images = next(it)
            except StopIteration:
                return
            if decode is not None:   # a latent model's images/s includes its decoder
                images = decode(images)
            gen_seconds += time.perf_counter() - start
            if images.dim() == 5:    # clips: temporal statistics, then their frames for the frame metrics
                from elit.eval.video import clips_uint8, frames_of
                clips = clips_uint8(images)
                if temporal is not None:
                    temporal.update(clips, None if labels is None else torch.tensor(labels))
                yield frames_of(clips)
            else:
                yield to_uint8(images)

    shards = shards or Shards()
    if not shards.is_main:
        for _ in batches():     # generate and send this rank's batches
            pass
        return None
    frame_metrics = [m for m in metrics if m in METRIC_NET]
    if frame_metrics:
        res = compute_metrics(batches(), refs, frame_metrics, batch_size=batch_size, extractors=extractors,
                              progress=False, fd_method=fd_method)
    else:
        res = {"protocols": {}, "num_samples": sum(len(b) for b in batches())}
    if temporal is not None:
        res.update({m: v for m, v in temporal.results(video_refs["stats"], fd_method).items() if m in metrics})
        res["num_samples"] = temporal.clips
        res["protocols"].update({m: video_refs["protocol"] for m in metrics if m not in METRIC_NET})
    gflops = sampling_gflops(model.config, steps=steps, budget=setting["latents_per_group"],
                             guidance=setting["guidance"], weak_budget=setting["weak_budget"], sampler=sampler,
                             scale=options["scale"])
    row = {**setting, "steps": steps, "sampler": sampler, "w": 1.0 + setting["scale"],
           "num_samples": res["num_samples"], "gflops_per_image": gflops,
           "images_per_s": round(res["num_samples"] / gen_seconds, 3) if gen_seconds else None}
    for m in metrics:
        row[m] = res.get(m)
        if m + "_std" in res:
            row[m + "_std"] = res[m + "_std"]
    row["protocols"] = res["protocols"]
    return row


def read_rows(path) -> list[dict]:
    """The rows a sweep saved to `path` ([] if there is no file); a UserError if the file holds
    anything else (an image, someone's JSON, a truncated file), which a sweep must not overwrite."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    fix = "choose another --json file, or move that one"
    try:
        rows = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"--json {path} exists and is not JSON ({type(e).__name__}); elit eval writes and resumes "
                        f"its own rows file: {fix}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in ROW_KEYS) for r in rows):
        raise UserError(f"--json {path} holds JSON that is not elit eval's rows (a list of rows with "
                        f"{', '.join(ROW_KEYS[:3])}, ...); {fix}")
    return rows


def sweep_identity(num: int, seed_start: int, ref) -> dict:
    """What rows of one sweep share besides their settings: samples per row, first seed, reference.
    Rows measured under another identity are other measurements, not rows to skip."""
    text = json.dumps(ref, sort_keys=True, default=str) if isinstance(ref, dict) else str(ref)
    return {"num": num, "seed_start": seed_start, "ref": text}


def check_rows(rows: list[dict], identity: dict, fingerprints: dict | None, path,
               precisions: dict | None = None) -> None:
    """Refuse to resume rows measured with other samples, seeds, reference, or other weights or
    precision under the same model name (they would be skipped as done and reported as this
    sweep's). Rows written before these were recorded lack them and are taken as they are."""
    for r in rows:
        diff = [f"{k}: {r.get(k, r.get('num_samples') if k == 'num' else None)!r} -> {v!r}"
                for k, v in identity.items() if r.get(k, r.get("num_samples") if k == "num" else None) not in (None, v)]
        weights = (fingerprints or {}).get(r.get("model"))
        if weights and r.get("model_sha256") not in (None, weights):
            diff.append(f"model {r.get('model')!r}: other weights under the same name")
        precision = (precisions or {}).get(r.get("model"))
        if precision and r.get("precision") not in (None, precision):
            diff.append(f"model {r.get('model')!r}: precision {r.get('precision')} -> {precision}")
        if diff:
            raise UserError(f"--json {path} holds rows measured with other settings ({'; '.join(diff)}); use another "
                            f"--json file (or name the models LABEL=DIR), or delete it to measure again")


def row_key(row: dict) -> tuple:
    """What makes two rows the same measurement (resuming skips a row whose key is saved)."""
    return tuple(row.get(k) for k in ROW_KEYS)


def setting_key(label: str, setting: dict, steps: int, sampler: str) -> tuple:
    """The row_key a setting of model `label` will have once measured."""
    return row_key({**setting, "model": label, "steps": steps, "sampler": sampler})


def run_sweep(models: dict, settings: dict[str, list[dict]], *, num: int, steps: int, sampler: str, metrics, ref,
              batch_size: int = 64, json_path=None, progress: bool = True, net_kwargs: dict | None = None,
              seed_start: int = 0, fd_method: str = "sqrtm", decode=None, ref_num: int = 2000,
              i3d_weights=None, shards=None, fingerprints: dict | None = None) -> list[dict]:
    """Evaluate every model (label -> model) at its settings: label -> list of settings (see
    `sweep_settings`), or a list of (label, setting) pairs to run in that order. Resume from and
    append to json_path. Video models are measured per frame and with the temporal metrics of
    `elit.eval.video` against `ref_num` reference clips. With `shards` (torchrun) rank 0 measures
    and writes; the others only generate their batches and return []. `fingerprints` (label -> the
    weights' sha256) lets a resume tell a model from another one of the same name."""
    from elit.eval.video import TEMPORAL_METRICS, is_video_model
    metrics = tuple(metrics)
    videos = {is_video_model(m) for m in models.values()}
    if len(videos) > 1:
        raise UserError("a sweep measures image models or video models, not both: run them apart")
    video = videos == {True}
    known = (*METRIC_NET, *TEMPORAL_METRICS) if video else tuple(METRIC_NET)
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UserError(f"unknown metrics {unknown}; choose from {', '.join(known)}")
    pairs = settings if isinstance(settings, list) else [(label, s) for label in models for s in settings[label]]
    if shards is not None and not shards.is_main:
        for label, setting in shards.broadcast(None):     # the rows rank 0 has left to measure
            evaluate_row(models[label], setting, num=num, steps=steps, sampler=sampler, metrics=metrics, refs=None,
                         extractors=None, batch_size=batch_size, progress=False, seed_start=seed_start,
                         decode=decode, shards=shards)
        return []
    identity = sweep_identity(num, seed_start, ref)
    path = pathlib.Path(json_path) if json_path else None
    saved = read_rows(path) if path else []   # every saved row stays in the file
    precisions = {label: getattr(m, "compute_precision", "fp32") for label, m in models.items()}
    check_rows(saved, identity, fingerprints, path, precisions)   # before minutes of reference features
    nets = sorted({METRIC_NET[m] for m in metrics if m in METRIC_NET})
    extractors = {n: get_extractor(n, **(net_kwargs or {})) for n in nets}
    need = [n for n in nets if any(METRIC_NET[m] == n for m in metrics if m in NEEDS_FEATURES)]
    video_refs = None
    if video:
        model = next(iter(models.values()))   # decoded clips have the VAE's frames and size, not the latents'
        shape = decode.output_shape(model.sample_shape()) if decode is not None else model.sample_shape()
        ref, video_refs = prepare_video_reference(ref, shape, metrics, ref_num, net_kwargs, i3d_weights, batch_size)
    refs = reference_stats(ref, extractors, need_features=need, batch_size=batch_size, progress=progress)[0] \
        if nets else {}
    # A saved row counts as done only if it carries every metric asked for now; others are redone, and
    # the new values join the row's old ones (an FID measured before must not vanish from the file).
    rows = [r for r in saved if all(r.get(m) is not None for m in metrics)]
    done = {row_key(r) for r in rows}
    todo = [(label, s) for label, s in pairs
            if setting_key(label, s, steps, sampler) not in done]
    if shards is not None:
        shards.broadcast(todo)
    if path and rows:
        print(f"resuming: {len(rows)} rows already in {path}, {len(todo)} to go")
    for i, (label, setting) in enumerate(todo):
        scale = f" lambda={setting['scale']:g}" if setting["guidance"] != "none" else ""
        weak = f" weak={setting['weak_budget']}" if setting["weak_budget"] is not None else ""
        print(f"[{i + 1}/{len(todo)}] {label}: budget {setting['latents_per_group']} {setting['guidance']}{scale}{weak}",
              flush=True)
        row = evaluate_row(models[label], setting, num=num, steps=steps, sampler=sampler, metrics=metrics,
                           refs=refs, extractors=extractors, batch_size=batch_size, progress=progress,
                           seed_start=seed_start, fd_method=fd_method, decode=decode, video_refs=video_refs,
                           shards=shards)
        row = {"model": label, **row, **identity, "model_sha256": (fingerprints or {}).get(label),
               "precision": precisions[label]}
        row = _merge_into(saved, row)
        rows.append(row)
        print("   " + ", ".join(f"{m}={row[m]:.3f}" for m in metrics if row.get(m) is not None)
              + f", {row['gflops_per_image']:.2f} GFLOPs/img", flush=True)
        if path:
            write_json(path, saved)
    return rows


def _merge_into(saved: list[dict], row: dict) -> dict:
    """Put `row` in `saved`: in place of a saved row of the same key (keeping that row's other
    metrics and protocols), else at the end. Returns the row as saved."""
    for i, old in enumerate(saved):
        if row_key(old) == row_key(row):
            merged = {**old, **row, "protocols": {**(old.get("protocols") or {}), **(row.get("protocols") or {})}}
            saved[i] = merged
            return merged
    saved.append(row)
    return row


def prepare_video_reference(ref, shape, metrics, num, net_kwargs, i3d_weights, batch_size):
    """Reference clips of the generated clips' `shape` (C, T, H, W) for a video sweep: (their frames,
    for the frame metrics; the temporal reference)."""
    from elit.eval.video import TEMPORAL_METRICS, ClipStatistics, I3DFeatures, frames_of, reference_clips
    if isinstance(ref, dict):
        raise UserError("a video sweep takes one reference (moving-fmnist-test or an .npz of clips), not NET=REF")
    clips, labels = reference_clips(ref, shape, num)
    out = None
    if any(m in TEMPORAL_METRICS for m in metrics):
        # the Fashion-MNIST classifier only for its own metrics: FVD alone measures any RGB clips
        fmnist = any(m in TEMPORAL_METRICS and m != "fvd" for m in metrics)
        classifier = get_extractor("fmnist", **(net_kwargs or {})) if fmnist else None
        i3d = I3DFeatures(i3d_weights, device=(net_kwargs or {}).get("device", "cpu")) if "fvd" in metrics else None
        stats = ClipStatistics(classifier, clips.shape[2], i3d)
        for i in range(0, len(clips), batch_size):
            stats.update(clips[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
        nets = ([classifier.protocol] if classifier else []) + (["FVD: I3D features, 224x224, [-1, 1]"] if i3d else [])
        out = {"classifier": classifier, "i3d": i3d, "stats": stats.stats(), "frames": clips.shape[2],
               "protocol": f"clips of {clips.shape[2]} frames vs {len(clips)} reference clips of {ref}; "
                           + "; ".join(nets)}
    return frames_of(clips), out
