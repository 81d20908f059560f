"""The README stays a short front door, and the MkDocs site stays whole (issue 19).

`mkdocs build --strict` (tests/run.sh) fails on a broken link inside the site; these checks
cover what it does not see: the README's own links (GitHub renders them, MkDocs never reads
the README), every page being reachable from the nav, and the generated configuration page.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GENERATED = {"reference/configuration.md"}  # written by docs/hooks/config_reference.py
MAX_README_LINES = 120

_LINK = re.compile(r"\]\(([^)\s]+)\)")


class _Loader(yaml.SafeLoader):
    """mkdocs.yml names Python objects (``!!python/name:``); their value does not matter here."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _mkdocs() -> dict[str, Any]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)
    assert isinstance(config, dict)
    return config


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def _pages() -> set[str]:
    return {
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if not p.relative_to(DOCS).as_posix().startswith("hooks/")
    }


def test_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move details to docs/"
    )


def test_readme_keeps_its_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "python3 -m pip install -e '.[ui,demo]' && python3 -m idds_vis demo" in text
    assert "\nbash tests/run.sh\n" in text
    # .ci/run runs the README's test command, nothing else.
    assert "exec bash tests/run.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_links_resolve() -> None:
    links = _LINK.findall(README.read_text(encoding="utf-8"))
    assert links, "the README links to the docs"
    missing = []
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (ROOT / link.split("#", 1)[0]).resolve()
        if not target.exists():
            missing.append(link)
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages(_mkdocs()["nav"])
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = _pages()
    assert not pages - set(nav), f"docs pages missing from mkdocs.yml's nav: {pages - set(nav)}"
    assert not set(nav) - pages - GENERATED, (
        f"nav entries with no page: {set(nav) - pages - GENERATED}"
    )
    assert not GENERATED & pages, "the generated configuration page must not be committed"


def test_strict_build_is_configured() -> None:
    config = _mkdocs()
    assert config.get("strict") is True
    assert "docs/hooks/config_reference.py" in config.get("hooks", [])
    run = (ROOT / "tests" / "run.sh").read_text(encoding="utf-8")
    assert re.search(r"mkdocs build --strict", run), "tests/run.sh builds the docs strictly"


def test_configuration_reference_lists_every_setting() -> None:
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location(
        "config_reference_hook", DOCS / "hooks" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook._render()
    from idds_vis.runtime.config import Settings

    names = [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]
    absent = [n for n in names if f"`{n}`" not in page]
    assert not absent, f"the configuration reference misses: {absent}"


def test_no_citation_of_a_design_file_outside_the_repository() -> None:
    # DESIGN.md is not in the repository: docstrings point at the docs pages instead.
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for top in ("idds_vis", "tests", "docs", "conf", "workflows")
        for p in (ROOT / top).rglob("*")
        if p.suffix in {".py", ".md", ".yaml", ".yml"} and p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "DESIGN.md" in line
    ]
    assert not cited, f"DESIGN.md is not in the repository, yet cited at {cited}"


STALE = (
    # Issue 19's examples: claims the code outgrew (the Kubernetes deployer exists).
    "a Kubernetes Deployment later",
    "comes with its issue",
    "no kube-apiserver can run here",
)


def test_no_known_stale_sentence() -> None:
    texts = [README, *DOCS.rglob("*.md")]
    found = [
        f"{p.relative_to(ROOT)}: {phrase!r}"
        for p in texts
        for phrase in STALE
        if phrase in " ".join(p.read_text(encoding="utf-8").split())
    ]
    assert not found, f"stale sentences: {found}"


def test_no_link_split_across_lines() -> None:
    # MkDocs renders `[text](how-to/broker-\nmessages.md)` as plain text, and its strict build
    # does not notice: a link's target must stay on one line.
    split = [
        f"{p.relative_to(ROOT)}: {m.group(0)!r}"
        for p in [README, *DOCS.rglob("*.md")]
        for m in re.finditer(r"\]\([^)\s]*\n", p.read_text(encoding="utf-8"))
    ]
    assert not split, f"links broken across lines: {split}"
