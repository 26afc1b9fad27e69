"""Atomic file writes shared by every module that writes results: a temporary file in the target folder, then
``os.replace``, so a crash or ``kill -9`` leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    path = Path(path)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        publish(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # e.g. a full disk: say which file could not be written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    return path
