"""Reading user files with clear errors, and writing files so that no reader ever sees half of one.

Every write goes to a temporary file in the destination's folder (unique name, cleaned up on any
error) and is renamed over the destination (atomic on POSIX): a kill at any moment leaves the old
file or the new one. Folders are replaced the same way (`replace_dir`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

from elit.errors import MissingInputError, UserError


def read_json(path, what: str = "file"):
    """Parse a user's JSON file; MissingInputError / UserError naming `what` and the path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", fsync: bool = False):
    """`with atomic_write(p, "w") as f: f.write(...)`: p appears complete, or not at all."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the name of a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> pathlib.Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return pathlib.Path(path)


def copy_file(src, path) -> pathlib.Path:
    """Copy src to path atomically (path's folder is made when missing)."""
    with atomic_write(path) as f:
        f.write(pathlib.Path(src).read_bytes())
    return pathlib.Path(path)


def write_json(path, obj, indent: int = 1) -> pathlib.Path:
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def is_temporary(name: str) -> bool:
    """Names `atomic_write` and `temp_dir_beside` use for work in progress."""
    return name.startswith(".") and (name.endswith(".tmp") or ".staging-" in name)


def temp_dir_beside(path, purpose: str = "staging") -> pathlib.Path:
    """A new hidden folder next to `path` (same file system, so its contents can be renamed in)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.{purpose}-", dir=path.parent))


def replace_dir(new: pathlib.Path, path) -> pathlib.Path:
    """Move the finished folder `new` to `path`, replacing any folder there. The old one is moved
    aside first and deleted last, so `path` is at every moment the old folder, or the new one."""
    path = pathlib.Path(path)
    if path.exists():
        old = temp_dir_beside(path, "old")
        os.replace(path, old / path.name)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)
    return path


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 16 MiB blocks (checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
