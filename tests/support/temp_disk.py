"""How much temporary disk a process holds: what upload tests and ``bench.hostile`` measure."""

from __future__ import annotations

import os
from pathlib import Path


def temp_bytes(pid: int, temp_dir: Path) -> int:
    """Bytes ``pid`` holds in ``temp_dir``: files there, and files already unlinked but still
    open (a spooled upload is one: it has no name in the folder)."""
    held = sum(path.stat().st_size for path in temp_dir.rglob("*") if path.is_file())
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(temp_dir)):
                held += fd.stat().st_size
        except OSError:
            pass  # closed since listed
    return held
