"""Whole-file writes: a reader, or another process writing the same file, never sees half of one."""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a partial file of this process and thread, then rename it over `path`.

    Two writers of one path (instances sharing a cache folder) each rename a whole file of their own; the last
    one wins. A failed write (a full disk) leaves no partial file and raises the OSError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
