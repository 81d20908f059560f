"""The test helpers' own names must not hide real libraries.

panda-server runs with ``PYTHONPATH=tests`` (for ``panda_wsgi``), so a top-level module or
package under ``tests/`` named like an installed distribution replaces it there: a
``tests/packaging`` made panda-server fail with "No module named 'packaging.specifiers'"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _top_level_names() -> list[str]:
    names = [p.stem for p in TESTS.glob("*.py") if p.stem != "__init__"]
    names += [p.name for p in TESTS.iterdir() if (p / "__init__.py").is_file()]
    return sorted(names)


def test_no_test_helper_shadows_an_installed_library(monkeypatch) -> None:
    outside = [p for p in sys.path if p and Path(p).resolve() not in (TESTS, TESTS.parent)]
    monkeypatch.setattr(sys, "path", outside)
    shadowing = []
    for name in _top_level_names():
        if name in sys.modules and not getattr(sys.modules[name], "__file__", "").startswith(
            str(TESTS)
        ):
            shadowing.append(name)
            continue
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            shadowing.append(name)
    assert shadowing == [], f"tests/ names that hide installed libraries: {shadowing}"
