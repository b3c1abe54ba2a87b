"""One writer per output: an exclusive lock beside each folder or file that a command writes.

Two `elit train` runs on one --out would write duplicate log lines and delete each other's
checkpoint temporaries; two `elit sample` runs would mix their images. So every command that
writes an output first takes `.NAME.lock` beside it (the output itself may be replaced whole).

The lock is `flock` on that file, which the kernel drops when its process dies, so a lock file left
by a killed run is never mistaken for a live one: it is taken over, with a message naming the dead
owner. The file holds the owner's pid and host, which the refusal quotes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import socket
import sys

from elit.errors import UserError


class OutputLocked(UserError):
    """Another live process is writing the same output."""


def lock_path(target) -> pathlib.Path:
    target = pathlib.Path(target)
    return target.parent / f".{target.name}.lock"


def _owner_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _acquire(path: pathlib.Path) -> int | None:
    """The locked fd, or None if a live process holds the lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous owner unlinks the file when it releases: if it did so between our open and
        # our flock, we hold a lock on a file nobody else can see. Try again on the current one.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def exclusive_output(target, command: str):
    """Hold the lock on `target` (a folder or file that `command` writes) for the block's duration.
    Raises OutputLocked, naming the owner, if another live process holds it."""
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except OSError as e:   # a read-only place (/proc, a mount), a file where a folder should be
        raise UserError(f"cannot write {target}: making its lock file {path} failed ({e.strerror or e}); choose an "
                        f"output in a folder you can write") from None
    if fd is None:
        owner = _read_owner(path)
        raise OutputLocked(f"{target} is in use by another process ({owner}); wait for it to finish or stop it, "
                           f"or choose another output")
    try:
        previous = _owner_text(fd)
        if previous:   # a lock file nobody holds: its owner died without releasing it
            print(f"{command}: taking over the stale lock {path} of a process that is gone ({previous})",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, {command}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)   # before unlocking, so no newcomer locks the unlinked file
        os.close(fd)


def _read_owner(path: pathlib.Path) -> str:
    try:
        return path.read_text().strip() or "owner unknown"
    except OSError:
        return "owner unknown"
