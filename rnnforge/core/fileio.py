"""Atomic artifact writes: every file goes to a temp file in the same directory, then is renamed.

A crash or SIGKILL mid-write leaves the previous artifact (or none) behind, never half of one.
The temp file (or every file of a temp directory) is fsynced before the rename and the directory
after it, so a power loss leaves the old artifact or the complete new one as well. A set of
files that belong together (bench's results) is staged in a hidden folder beside its own and
moved in only once every file is written (``staged_files``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rnnforge.core.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success rename it onto ``path``, else delete it.

    Works for files and directories (the caller creates whichever it needs at the temp path).
    ``suffix`` keeps an extension that writers insist on (e.g. ``.keras``, ``.png``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        sync_tree(tmp)
        if tmp.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
        sync_directory(target.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike, replaces: Iterable[str] = (), last: Iterable[str] = ()) -> Iterator[Path]:
    """Write a set of files into ``folder`` as one: yield an empty hidden folder beside it
    (``.NAME.XXXX.tmp``) to write them into; when the block ends, they replace ``folder``'s files of
    the same names (those named in ``last`` after the others), and the names in ``replaces`` that
    the set lacks are removed from ``folder`` (stale members of an earlier set). ``folder``'s other
    files stay. A new ``folder`` is the staged one renamed into place; an existing one gets the files
    one ``os.replace`` each, with Ctrl-C held until they are all in. If the block raises (Ctrl-C
    included), the staged files are removed and ``folder`` is as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(stage, 0o777 & ~_umask())  # a folder as mkdir makes it (mkdtemp's is private)
        yield stage
        sync_tree(stage)
        names = sorted((p.name for p in stage.iterdir()), key=lambda name: name in set(last))
        blocked = [name for name in names if (folder / name).is_dir()]
        if blocked:
            raise UserError(f"{folder / blocked[0]} is a folder: the new {blocked[0]} cannot replace it")
        with ctrl_c_held():
            if not folder.exists():
                os.replace(stage, folder)
            else:
                for name in names:
                    os.replace(stage / name, folder / name)
                for name in set(replaces) - set(names):
                    if (folder / name).is_file():
                        (folder / name).unlink()
                sync_directory(folder)
            sync_directory(folder.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a SIGINT that arrives inside the block until it ends (then it is delivered as usual),
    so a few renames that belong together are all done. Only the main thread handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            os.kill(os.getpid(), signal.SIGINT)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sync_tree(path: Path) -> None:
    """fsync ``path``, or every file and directory under it, so their data is on disk."""
    paths = [path] if not path.is_dir() else [*(p for p in path.rglob("*") if p.is_file()), path]
    for item in paths:
        if item.is_dir():
            sync_directory(item)
            continue
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())


def sync_directory(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike, what: str, directory: bool = True) -> Path:
    """Refuse, before any work, a place that cannot be created or written: ``path`` (a directory
    if ``directory``, else a file) under a file, on a read-only mount, in /proc. ``what`` names it
    in the one-line error (``--run-dir``). Probes with a temp file that is removed at once."""
    target = Path(path).absolute()
    if target.exists() and target.is_dir() != directory:
        raise UserError(
            f"{what} {target} is a {'file' if directory else 'directory'}, expected a "
            f"{'directory' if directory else 'file'}"
        )
    existing = target if directory and target.exists() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {target} cannot be created: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rnnforge-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(
            f"{what} {target} cannot be {'written' if existing == target else 'created'}: "
            f"{existing} is not writable ({exc.strerror or exc})"
        ) from None
    return target


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
