"""Mapping an artefact location from the training machine to where it is in a staged tree.

Pure path logic, no database: ``rewrite.py`` feeds it rows.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from idds_vis.domain.errors import LimitExceeded
from idds_vis.staging.member_plan import MAX_DEPTH
from idds_vis.staging.paths import RESERVED, is_within

# Directory names MLflow gives its artefact roots (file store, and `mlflow server` default).
ARTEFACT_DIRS = ("mlartifacts", "mlruns")
# Two characters at least: 'C:' starts a Windows path, not a URI.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
# URIs that name another row of the same store rather than a place.
REFERENCE_SCHEMES = ("runs", "models")
# Placement is Python work outside SQLite's CPU budget: a store's locations (each tried, suffix
# by suffix, under each candidate base) times a tree's bases were unbounded, and 20 locations
# 60 components deep in a tree of 2000 mlruns directories cost 114 s of CPU (100000 of them:
# days, in a pipeline worker). Bases beyond the shallowest MAX_BASES say nothing more, no
# suffix deeper than any staged path (MAX_DEPTH) can exist, and the whole placement may make
# at most MAX_LOOKUPS lookups (a real store needs a few dozen a location).
MAX_BASES = 64
MAX_LOOKUPS = 2_000_000
# The lookups allowed can still cost about a minute of CPU in the worst tree; the placement
# also stops after this much CPU of its own thread (a hostile store's whole budget is ~10 s).
MAX_PLACEMENT_CPU = 8.0


def location_scheme(location: str) -> str | None:
    """The URI scheme, lower-cased; None for a plain (POSIX or Windows) path."""
    text = location.strip()
    match = _SCHEME.match(text)
    if match is None or _DRIVE.match(text):
        return None
    return match.group(1).lower()


def location_kind(location: str) -> str:
    """Which locations may share a learned path prefix: plain and file: paths; paths of
    mlflow-artifacts: URIs, relative to the server's artefact root, not to /; and those of
    any other scheme, relative to their host or bucket."""
    scheme = location_scheme(location)
    if scheme in (None, "file"):
        return "path"
    if scheme == "mlflow-artifacts":
        return "server"
    try:
        netloc = urlsplit(location.strip()).netloc.lower()
    except ValueError:
        netloc = ""
    return f"{scheme}://{netloc}"


def _uri_path(text: str, scheme: str) -> str:
    try:
        return unquote(urlsplit(text).path)
    except ValueError:  # e.g. an unclosed '[' where urlsplit wants an IPv6 host
        rest = text[len(scheme) + 1 :]
        return unquote(rest[2:].partition("/")[2] if rest.startswith("//") else rest)


def location_parts(location: str) -> list[str] | None:
    """Path components of a location of any scheme (``s3://bucket/1/r/artifacts`` gives
    1, r, artifacts: the layout below an artefact root is MLflow's wherever the root was);
    None for a blank one."""
    text = location.strip()
    scheme = location_scheme(text)
    path = text if scheme is None else _uri_path(text, scheme)
    if not text or (scheme is None and not path.strip()):
        return None  # unset, nothing to fix
    # '..' is dropped rather than applied: whatever it meant on the training machine, the
    # result must land under the staged root. An empty list ('..', '/') is placed there too.
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]


def location_reference(location: str) -> tuple[str, str, list[str]] | None:
    """``runs:/<run>/<path>`` and ``models:/<model>``: (scheme, the id named, the path below
    it); None for any other location."""
    scheme = location_scheme(location)
    if scheme not in REFERENCE_SCHEMES:
        return None
    parts = location_parts(location) or []
    if not parts:
        return None
    return scheme, parts[0], parts[1:]


@dataclass(frozen=True)
class Wanted:
    """One location to place: its components and the suffix that identifies it."""

    kind: str  # location_kind()
    parts: tuple[str, ...]
    anchor: int | None  # index in parts where the identifying suffix starts
    fallback: tuple[str, ...]  # suffix to use under an artefact root if nothing matches

    @property
    def min_suffix(self) -> int:
        if self.anchor is None:
            return min(2, len(self.parts))
        return len(self.parts) - self.anchor


def _last_index(parts: list[str], value: str | None, end: int) -> int | None:
    if not value:
        return None
    for i in range(end - 1, -1, -1):
        if parts[i] == value:
            return i
    return None


def _component(value: str | None) -> str | None:
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        return None
    return value


def wanted(
    kind: str,
    parts: list[str],
    exp_id: str | None,
    own_id: str | None,
    default_tail: tuple[str, ...],
) -> Wanted:
    """Anchor on the experiment id (MLflow's layout is ``<exp>/<run>/artifacts``,
    ``<exp>/models/<model>/artifacts``), else on the row's own id, else on nothing."""
    # Ids come from a database we did not write: one with a '/' or '..' must not steer a path.
    exp_id, own_id = _component(exp_id), _component(own_id)
    default_tail = tuple(c for c in default_tail if _component(c))
    own = _last_index(parts, own_id, len(parts))
    exp = _last_index(parts, exp_id, own if own is not None else len(parts))
    if exp is not None:
        return Wanted(kind, tuple(parts), exp, tuple(parts[exp:]))
    if own is not None:
        # The path does not name the experiment (s3://bucket/runs/<run>/…): MLflow's layout
        # under the artefact root, when known, places it better than the path's own tail.
        start = own - 1 if own > 0 and parts[own - 1] == "models" else own
        return Wanted(kind, tuple(parts), start, default_tail or tuple(parts[start:]))
    return Wanted(kind, tuple(parts), None, default_tail or tuple(parts[-1:]))


def candidate_bases(root: Path, db_path: Path) -> list[Path]:
    """Where suffixes are tried: the db's directory, every directory holding an mlflow.db,
    every mlruns/mlartifacts dir and its parent (shallowest first), then the root itself.

    A db kept under the reserved directory is a working copy (the UI prepares one there),
    so its directory says nothing about where the artefacts are.
    """
    bases: list[Path] = []
    reserved = root / RESERVED
    if is_within(root, db_path) and not is_within(reserved, db_path):
        bases.append(Path(os.path.realpath(db_path.parent)))
    found: list[tuple[int, int, str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root and RESERVED in dirnames:
            dirnames.remove(RESERVED)
        depth = len(here.relative_to(root).parts)
        if "mlflow.db" in filenames:
            found.append((depth, 0, str(here), here))
        for name in [d for d in dirnames if d in ARTEFACT_DIRS]:
            found.append((depth, 1, str(here / name), here / name))
            found.append((depth, 2, str(here), here))
            # Run dirs below an artefact root hold no further roots; skip the big subtrees.
            dirnames.remove(name)
    bases.extend(entry[-1] for entry in sorted(found))
    bases = list(dict.fromkeys(bases))[: MAX_BASES - 1]
    return list(dict.fromkeys([*bases, root]))


class Placer:
    """Finds each location's staged place, learning from the matches where the rest go."""

    def __init__(self, root: Path, db_path: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.bases = candidate_bases(self.root, db_path)
        self._roots: Counter[Path] = Counter()
        # (kind, original path prefix) -> the staged directory that prefix turned out to be
        self._prefixes: dict[tuple[str, tuple[str, ...]], Path] = {}
        self.lookups = 0
        self.max_lookups = MAX_LOOKUPS
        self.cpu_deadline = time.thread_time() + MAX_PLACEMENT_CPU

    def _spend(self, n: int) -> None:
        self.lookups += n
        if self.lookups > self.max_lookups:
            raise LimitExceeded(
                f"placing the store's artefact locations needs more than {self.max_lookups}"
                " lookups in the staged tree, not served"
            )
        if time.thread_time() > self.cpu_deadline:
            raise LimitExceeded(
                f"placing the store's artefact locations took more than {MAX_PLACEMENT_CPU:g} s"
                " of CPU, not served"
            )

    def find(self, want: Wanted) -> Path | None:
        parts = want.parts
        for k in range(min(len(parts), MAX_DEPTH), max(want.min_suffix, 1) - 1, -1):
            self._spend(len(self.bases))
            for base in self.bases:
                candidate = base.joinpath(*parts[-k:])
                if candidate.exists() and is_within(self.root, candidate):
                    self._prefixes.setdefault((want.kind, parts[: len(parts) - k]), base)
                    if want.anchor is not None:
                        self._roots[candidate.parents[len(parts) - want.anchor - 1]] += 1
                    return candidate
        return None

    def fallback(self, want: Wanted) -> Path:
        """Where the location most likely belongs; only reached when nothing matched.

        First choice: where a matched sibling's path prefix went (an experiment's location
        is usually a prefix of its runs'; a run that logged nothing shares its siblings'
        prefix). Else MLflow's layout under the artefact root most rows were found in.
        """
        target = self._by_prefix(want)
        if target is None:
            if self._roots:
                artefact_root = self._roots.most_common(1)[0][0]
            else:
                artefact_root = self._default_root(want)
            target = artefact_root.joinpath(*want.fallback)
        return target if is_within(self.root, target) else self.root

    def _by_prefix(self, want: Wanted) -> Path | None:
        self._spend(len(self._prefixes))
        best: tuple[int, Path] | None = None
        for (kind, prefix), base in self._prefixes.items():
            # An empty prefix means "everything": only sound for server-relative paths.
            if kind != want.kind or (not prefix and kind != "server"):
                continue
            if want.parts[: len(prefix)] == prefix and (best is None or len(prefix) > best[0]):
                best = (len(prefix), base.joinpath(*want.parts[len(prefix) :]))
        return None if best is None else best[1]

    def _default_root(self, want: Wanted) -> Path:
        named = [b for b in self.bases if b.name in ARTEFACT_DIRS]
        if named:
            return named[0]
        home = self.bases[0]
        if want.kind == "server":
            return home / "mlartifacts"  # `mlflow server`'s default artefacts destination
        for name in ARTEFACT_DIRS:
            if name in want.parts:
                return home / name
        return home
