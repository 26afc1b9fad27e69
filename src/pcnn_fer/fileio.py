"""Atomic file writes shared by every module that writes results: a temporary file in the target folder, then
``os.replace``, so a crash or ``kill -9`` leaves the old file or the new one, never a torn one; and a folder that a
failed job created is removed with the temporaries it left (:func:`removed_on_failure`); and the content hash of
files (:func:`sha256_of`); and the check of an ``--out`` folder before any work (:func:`check_out_folder`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_of(*paths: str | Path) -> str:
    """Hex sha256 of the bytes of ``paths`` in order (paths that are not files are skipped), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        if Path(path).is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def file_mode() -> int:
    """Permission bits of a normal new file under the current umask (``mkstemp`` would make it owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file normal permissions and move it into place."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


def temporary_beside(path: str | Path, suffix: str = ".tmp") -> tuple[int, str]:
    """An open file descriptor and name of a new temporary file in ``path``'s folder (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` for the body to write: moved into place when the body returns, deleted
    when it raises (Ctrl-C included); an :class:`OSError` that names no file (a full disk) then names ``path``."""
    path = Path(path)
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # e.g. a full disk: say which file could not be written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def temporaries(folder: str | Path) -> set[Path]:
    """The temporary files (``.NAME.*.tmp``, as :func:`temporary_beside` names them) under ``folder``."""
    folder = Path(folder)
    return set(folder.rglob(".*.tmp")) if folder.is_dir() else set()


@contextmanager
def removed_on_failure(folder: str | Path, keep: Callable[[], bool] = lambda: False) -> Iterator[Path]:
    """Create ``folder`` (and missing parents) for the body. If the body raises (Ctrl-C included), delete the
    temporary files it left under ``folder`` and, unless ``keep()`` says the folder holds something worth keeping,
    the folders this call created; a folder that existed before is never removed."""
    folder = Path(folder)
    created = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        created = candidate
    before = temporaries(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for tmp in temporaries(folder) - before:
            tmp.unlink(missing_ok=True)
        if created is not None and not keep():
            shutil.rmtree(created, ignore_errors=True)
        raise


def check_out_folder(out: str | Path, create: bool = True) -> None:
    """Make sure ``out`` is (or can become) a writable folder before any work, with one clear :class:`UsageError`
    if not: an existing file, a file on the way, a folder that cannot be created or written. ``create``: make it
    now (else only check, so that a run failing later leaves nothing behind)."""
    from .errors import UsageError  # here: the rest of this module runs on its own (tests load it so)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
        existing = out
    else:
        existing = next((p for p in (out, *out.absolute().parents) if p.exists()), out)
        if not existing.is_dir():
            raise UsageError(f"--out {out}: cannot create the folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder {'is' if existing == out else f'{existing} is'} not writable")
