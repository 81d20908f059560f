"""Write bits on a staged tree: off while a UI serves it, back on so a teardown can delete it."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def make_read_only(root: Path) -> None:
    """Drop write bits everywhere under root: the UI runs as a non-root user in production."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        Path(dirpath).chmod(stat.S_IMODE(Path(dirpath).stat().st_mode) & ~0o222)


def make_writable(root: Path) -> None:
    """Give write bits back so that a teardown can delete the tree."""
    if not root.exists():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        Path(dirpath).chmod(stat.S_IMODE(Path(dirpath).stat().st_mode) | 0o700)
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o600)
