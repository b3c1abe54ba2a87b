"""One guard for every command that writes an output (`elit sample`, `convert`, `ref`, `eval --json`, ...).

    with guarded_output(args.out, "elit ref", kind="file", suffix=".npz", ours=is_reference) as out:
        ...write out...

Before anything is computed or written it checks, in this order:
- the kind: a file output is not an existing folder and has the suffix readers expect; a folder
  output is not an existing file;
- the owner: an output that exists must be one this command wrote before (`ours(path)` raises a
  UserError naming what the path holds and the fix), unless `overwrite` where the command allows it;
- one writer: the lock beside it (elit._lock), which also turns an unwritable place (/proc, a
  read-only mount) into a one-line error.
If the command then fails, a folder it created that holds nothing of value (at most its bookkeeping
files, `scaffolding`) is removed, so a failed first run leaves nothing behind. (Files are written
atomically by elit._io: a failed run never leaves a new one.)
"""
from __future__ import annotations

import contextlib
import pathlib
import shutil

from elit._lock import exclusive_output
from elit.errors import UserError


def check_kind(path: pathlib.Path, kind: str, flag: str = "--out", suffix: str | None = None) -> None:
    """Refuse a folder where a file is written, a file where a folder is, a file without its suffix,
    and a path under a file (afile/out)."""
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{flag} {path}: {above} is a file, so nothing can be written under it; choose another {flag}")
    if kind == "file":
        if path.is_dir():
            example = f" (e.g. {path / ('out' + suffix)})" if suffix else ""
            raise UserError(f"{flag} {path} is a folder; give the name of the file to write{example}")
        if suffix and path.suffix != suffix:
            raise UserError(f"{flag} {path} must end in {suffix} (other commands recognise the file by it)")
    elif path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder (new, or one this command wrote before)")


def _holds_something(path: pathlib.Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def _remove_if_empty_of_results(path: pathlib.Path, scaffolding: tuple[str, ...]) -> None:
    """A folder this run created, if it holds only bookkeeping (hidden work files included)."""
    if not path.is_dir():
        return
    results = [p for p in path.iterdir() if p.name not in scaffolding and not p.name.startswith(".")]
    if not results:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def guarded_output(path, command: str, *, kind: str, flag: str = "--out", suffix: str | None = None,
                   ours=None, overwrite: bool = False, scaffolding: tuple[str, ...] = ()):
    """Check `path` (kind, owner), hold its lock for the block, and clean up a new output on failure.
    `ours(path, overwrite)` is called under the lock when `path` exists and holds something."""
    path = pathlib.Path(path)
    check_kind(path, kind, flag, suffix)
    with exclusive_output(path, command):
        created = not path.exists()
        if _holds_something(path) and ours is not None:
            ours(path, overwrite)
        try:
            yield path
        except BaseException:
            if created and kind == "folder":
                _remove_if_empty_of_results(path, scaffolding)
            raise
