"""A sha256 manifest of what was staged, so later tampering or truncation can be told apart."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from idds_vis.staging.paths import RESERVED

MANIFEST = f"{RESERVED}/manifest.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    files: int
    bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path) -> Manifest:
    """Hash every regular file under root (links are listed with their target, not followed)."""
    files: dict[str, dict[str, object]] = {}
    links: dict[str, str] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and RESERVED in dirnames:
            dirnames.remove(RESERVED)
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links[rel] = os.readlink(path)
            elif name in filenames and path.is_file():
                size = path.stat().st_size
                files[rel] = {"sha256": _sha256(path), "bytes": size}
                total += size
    document = {
        "version": 1,
        "file_count": len(files),
        "total_bytes": total,
        "files": dict(sorted(files.items())),
        "links": dict(sorted(links.items())),
    }
    target = root / MANIFEST
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return Manifest(files=len(files), bytes=total)
