"""All-or-nothing outputs.

A step writes into a hidden sibling folder and swaps it into place only when it has finished,
so a failed step never leaves half-written output behind: the previous output (if any) stays
as it was, and DVC never hashes a partial folder.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh staging folder that replaces ``target`` only if the block succeeds.

    The swap exchanges the two folders in one ``renameat2(RENAME_EXCHANGE)`` where the system has
    it (Linux), so a reader never finds ``target`` missing; elsewhere two renames, a moment apart.
    Staging folders of processes that are gone (killed mid-step) are swept first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target)
    staging = target.parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists() and exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it holds the previous output now
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:staging|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def sweep(target: Path) -> list[Path]:
    """Remove the staging and previous-output folders of ``target`` that a killed process left
    (those of a process still running are its work in progress); return what was removed."""
    removed = []
    for path in Path(target).parent.glob(f".{Path(target).name}.*"):
        found = LEFTOVER.match(path.name)
        if found and found["name"] == Path(target).name and not _alive(found["pid"]):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: str | None) -> bool:
    if pid is None or int(pid) == os.getpid():  # an older name without a pid, or our own leftover
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def fetch_file(target: Path, download: Callable[[str], str]) -> Path:
    """``download(folder)`` a file into a fresh folder beside ``target``, then move it to
    ``target`` in one rename: a download cut short never passes for the file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.download-") as folder:
        os.replace(download(folder), target)
    return target


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted json (stable for DVC diffs)."""
    path = Path(path)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return path


def read_json(path: Path) -> Any:
    """Read a json file."""
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not json-serialisable: {type(value).__name__}")
