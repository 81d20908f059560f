"""docs/threat-model.md covers the development sign-in and the warm pool's hand-over (with the
/proc/<pid>/environ caveat), and every file and test it cites there exists: a renamed test or
module makes this fail rather than leave the page pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "threat-model.md"
SECTIONS = ("## The development sign-in", "## The warm pool's hand-over")


def _section(text: str, heading: str) -> str:
    return heading + text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_the_sign_in_and_hand_over_sections_cite_what_exists() -> None:
    text = DOC.read_text()
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for heading in SECTIONS:
        section = _section(text, heading)
        cited = re.findall(r"`([^`\s]+)`", " ".join(section.split()))
        files = [c.split("::")[0] for c in cited if c.endswith(".py") or ".py::" in c]
        assert files, heading
        for name in files:
            assert (ROOT / name).is_file(), f"{heading}: {name} does not exist"
        names = [c.split("::")[-1] for c in cited if re.fullmatch(r"(\S+::)?test_\w+", c)]
        assert names, heading
        for name in names:
            assert re.search(rf"def {name}\(", tests), f"{heading}: no test {name}"
    pool = _section(text, SECTIONS[1])
    assert "/proc/<pid>/environ" in pool and "dedicated Unix user" in pool
    sign_in = _section(text, SECTIONS[0])
    assert all(word in sign_in for word in ("loopback", "DNS rebinding", "banner", "403"))
