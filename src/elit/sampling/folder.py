"""A folder of samples that is one run: its record (`sampling.json`), resuming, and refusing mixtures.

`elit sample --out DIR` writes one PNG per item (a video model: a GIF and an mp4) and, before the
first of them, `DIR/sampling.json`:
the settings that determine the images (model weights, budgets, guidance, steps, a text model's
prompts, ...), each item's label, the items the current command still has to write, and the files
that are not samples (the grid, the .npz) so that `elit fid DIR` skips them. An item is a seed
(`000007.png`), or for a text-to-image model a (prompt index, seed) pair (`p001-s000007.png`: prompt
1, seed 7; the key "p001-s000007" in the record). Hence:

- the same settings again resume: seeds already written are skipped (more seeds may be added);
- other settings on a folder that holds samples are refused (an FID would measure a mixture),
  unless --overwrite, which deletes what elit sample wrote there first;
- a folder with files elit sample did not write is refused;
- an interrupted run is marked unfinished, and `elit fid` refuses to measure it.
"""
from __future__ import annotations

import pathlib
import re
import shutil

from elit._io import is_temporary, read_json, write_json
from elit.errors import UserError

RECORD = "sampling.json"
FORMAT = "elit-samples/1"
_OUTPUTS = re.compile(r"^((p\d{3,}-s)?\d{6,}\.(png|gif|mp4)|grid\.(png|gif)|samples_[0-9x]+\.npz|sampling\.json)$")
IMAGE_FILES, CLIP_FILES = (".png",), (".gif", ".mp4")   # what one item writes


def item_stem(item) -> str:
    """The file name (without suffix) of a seed, or of a text model's (prompt index, seed) pair."""
    if isinstance(item, int):
        return f"{item:06d}"
    prompt, seed = item
    return f"p{prompt:03d}-s{seed:06d}"


def item_key(item) -> str:
    """An item as its record keys it: the seed as text (as before text models), or the pair's stem."""
    return str(item) if isinstance(item, int) else item_stem(item)


def parse_key(key):
    """The item of a record key (or of a pending entry: an int, or a pair's stem)."""
    if isinstance(key, int) or not str(key).startswith("p"):
        return int(key)
    prompt, seed = str(key)[1:].split("-s")
    return (int(prompt), int(seed))


def png_name(item) -> str:
    return f"{item_stem(item)}.png"


def seed_files(item, suffixes=IMAGE_FILES) -> list[str]:
    return [f"{item_stem(item)}{s}" for s in suffixes]


def read_record(folder) -> dict | None:
    """The folder's record if elit sample (this version) wrote one; None if there is none; an
    error if it is unreadable."""
    path = pathlib.Path(folder) / RECORD
    if not path.is_file():
        return None
    record = read_json(path, "sampling record")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return {"format": None}
    return record


def not_samples(folder) -> set[str]:
    """Files of `folder` that `elit fid` must skip; an error if the folder holds an unfinished run."""
    record = read_record(folder)
    if record is None or record.get("format") != FORMAT:
        return set()
    if record.get("pending"):
        done = len(record.get("images", {}))
        raise UserError(f"{folder} holds an unfinished elit sample run ({len(record['pending'])} seeds still to "
                        f"write, {done} written); rerun the same elit sample command to finish it")
    return set(record.get("not_samples", [])) | {RECORD}


def _visible(folder: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


class SampleFolder:
    """Prepare `out` for a run with `settings` and keep its record; call under the output lock."""

    def __init__(self, out, settings: dict, info: dict, suffixes=IMAGE_FILES):
        self.out, self.settings, self.info = pathlib.Path(out), settings, info
        self.suffixes = tuple(suffixes)   # the files of one seed: a PNG, or a clip's GIF and mp4
        self.images: dict[str, int | None] = {}      # item_key -> label
        self.extras: set[str] = set()
        self.pending: list[int] = []

    def prepare(self, seeds: list, labels: list[int] | None, overwrite: bool = False) -> list:
        """Check the folder, record the run, and return the items (seeds, or (prompt, seed) pairs) that
        still have to be sampled."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the samples")
        self._clean_leftovers()
        out.mkdir(parents=True, exist_ok=True)
        record = read_record(out)
        if overwrite:
            self._remove_outputs()
        elif _visible(out) and record is not None:
            self._check_same_run(record)
            self.images = {k: v for k, v in record["images"].items() if self._written(parse_key(k))}
            self.extras = {e for e in record.get("not_samples", []) if (out / e).exists()}
        # PNGs of seeds the last run was about to record (killed in between) are rewritten, identically.
        seeds_seen = [parse_key(k) for k in self.images] + [parse_key(s) for s in (record or {}).get("pending", [])
                                                             if not overwrite]
        ours = {RECORD, *self.extras, *(f for s in seeds_seen for f in seed_files(s, self.suffixes))}
        leftovers = sorted(p.name for p in _visible(out) if p.name not in ours)
        if leftovers:
            raise UserError(f"--out {out} holds files elit sample did not write ({', '.join(leftovers[:4])}"
                            f"{', ...' if len(leftovers) > 4 else ''}); move them, or choose a new or empty folder"
                            + ("" if overwrite else " (--overwrite deletes only what elit sample wrote)"))
        wanted = dict(zip(seeds, labels if labels is not None else [None] * len(seeds)))
        clash = [(s, self.images[item_key(s)], y) for s, y in wanted.items() if item_key(s) in self.images
                 and self.images[item_key(s)] != y]
        if clash:
            s, old, new = clash[0]
            raise UserError(f"seed {s} in {out} was sampled with label {old}, this command asks for {new}; "
                            f"use a new --out, or --overwrite to replace the folder's samples")
        self.pending = [s for s in seeds if item_key(s) not in self.images]
        self._labels = wanted
        self.save()
        return self.pending

    def _written(self, seed: int) -> bool:
        return all((self.out / f).is_file() for f in seed_files(seed, self.suffixes))

    def _clean_leftovers(self) -> None:
        """Hidden work-in-progress files of an interrupted run, inside and beside the folder (older
        versions staged PNGs in a folder beside it); safe to delete under the output lock."""
        out = self.out
        for p in out.parent.glob(f".{out.name}.staging-*") if out.parent.is_dir() else []:
            shutil.rmtree(p, ignore_errors=True)
        if out.is_dir():
            for p in out.iterdir():
                if is_temporary(p.name) and p.is_file():
                    p.unlink(missing_ok=True)

    def _remove_outputs(self) -> None:
        for p in _visible(self.out):
            if p.is_file() and _OUTPUTS.match(p.name):
                p.unlink()

    def _check_same_run(self, record) -> None:
        fix = "use a new --out, or --overwrite to replace the samples there"
        if record is None:
            return   # the leftover check names the files that are not ours
        if record.get("format") != FORMAT or not isinstance(record.get("images"), dict):
            raise UserError(f"{self.out / RECORD} was written by an older elit sample, without the settings that "
                            f"make a folder resumable; {fix}")
        diff = _differences(record.get("settings", {}), self.settings)
        if diff:
            raise UserError(f"--out {self.out} holds samples of other settings ({diff}); {fix}")

    def add(self, seeds: list) -> None:
        """Items whose files are now written."""
        for s in seeds:
            self.images[item_key(s)] = self._labels[s]
        done = set(seeds)
        self.pending = [s for s in self.pending if s not in done]
        self.save()

    def finish(self, extras: list[str]) -> pathlib.Path:
        self.extras |= set(extras)
        self.pending = []
        return self.save()

    def save(self) -> pathlib.Path:
        record = {"format": FORMAT, "settings": self.settings, **self.info, "num_images": len(self.images),
                  "pending": [s if isinstance(s, int) else item_key(s) for s in self.pending],
                  "not_samples": sorted(self.extras),
                  "images": dict(sorted(self.images.items(), key=lambda kv: _order(parse_key(kv[0]))))}
        return write_json(self.out / RECORD, record)


def _order(item) -> tuple:
    return (item,) if isinstance(item, int) else item


def write_batch(out: pathlib.Path, seeds: list, images) -> None:
    """One PNG per image, or an animated GIF and an mp4 per clip of a video model (each atomic);
    `seeds` are the items (seeds, or a text model's (prompt, seed) pairs)."""
    if images.dim() == 5:
        from elit.video import clips_to_uint8, save_gif, save_mp4
        for seed, clip in zip(seeds, clips_to_uint8(images)):
            gif, mp4 = seed_files(seed, CLIP_FILES)
            save_gif(clip, out / gif)
            save_mp4(clip, out / mp4)
        return
    from elit.viz import save_png_atomic, to_pil, to_uint8
    for seed, pixels in zip(seeds, to_uint8(images)):
        save_png_atomic(to_pil(pixels), out / seed_files(seed, IMAGE_FILES)[0])
