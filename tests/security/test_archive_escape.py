"""Hostile archives, generated here, must not write a byte outside the staging directory.

Each archive holds one legitimate MLflow file and then an attack: the CVE-2025-4517 chain
of long-named symlinked directories (its real path passes PATH_MAX while its lexical path
stays inside, which defeats tarfile's 'data' filter on Python < 3.11.13), links out, links
to links, members written through a link, names used twice, devices, bombs. Every staging
must end in a clear one-line reason, with dest empty, the sentinel directory beside it
empty and the file beside it unchanged.

The last test runs this module and the staging tests under Debian's own python3.11
(3.11.2, whose tarfile has no filters at all).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import pytest

from idds_vis.domain.errors import LimitExceeded, StagingError, UnsafeArchive
from idds_vis.staging import ArchiveStager
from idds_vis.staging.caps import Budget, Caps
from idds_vis.staging.member_plan import Link, Plan
from idds_vis.staging.safe_write import SafeTree
from tests.venvs import cache_root, pip_install

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
# A hang guard, not a speed claim: every refusal here comes before or early in the writing.
HANG_GUARD = 120.0
META = ("mlruns/0/meta.yaml", b"experiment_id: '0'\nname: Default\n")
VICTIM_TEXT = b"do not touch\n"


@dataclass
class Area:
    tmp: Path
    dest: Path
    sentinel: Path  # an empty directory beside dest
    victim: Path  # a file beside dest
    src: Path


@pytest.fixture
def area(tmp_path: Path) -> Area:
    (tmp_path / "area" / "sentinel").mkdir(parents=True)
    victim = tmp_path / "area" / "keep.txt"
    victim.write_bytes(VICTIM_TEXT)
    (tmp_path / "src").mkdir()
    return Area(
        tmp_path,
        tmp_path / "area" / "dest",
        tmp_path / "area" / "sentinel",
        victim,
        tmp_path / "src",
    )


def assert_nothing_escaped(area: Area) -> None:
    assert not list(area.sentinel.iterdir()), "an archive wrote into the sentinel beside dest"
    assert area.victim.read_bytes() == VICTIM_TEXT, "the file beside dest was changed"
    assert {p.name for p in area.dest.parent.iterdir()} <= {"dest", "sentinel", "keep.txt"}
    assert not area.dest.exists() or not any(area.dest.iterdir()), "dest left non-empty"
    assert not [p for p in area.tmp.rglob("pwned*")], "an archive wrote outside dest"


# --- archive makers ---------------------------------------------------------------------


@dataclass(frozen=True)
class M:
    """One member: kind 'file', 'dir', 'sym', 'hard', 'chr', 'blk' or 'fifo'."""

    name: str
    kind: str = "file"
    data: bytes = b"x"
    link: str = ""


def make_tar(path: Path, members: list[M], mode: Literal["w", "w:gz"] = "w:gz") -> Path:
    types = {
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for m in [M(META[0], data=META[1]), *members]:
            info = tarfile.TarInfo(m.name)
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                info.type = types[m.kind]
                info.linkname = m.link
                info.mode = 0o777 if m.kind != "dir" else 0o755
                tar.addfile(info)
    return path


def make_zip(path: Path, members: list[M]) -> Path:
    modes = {
        "file": stat.S_IFREG | 0o644,
        "dir": stat.S_IFDIR | 0o755,
        "sym": stat.S_IFLNK | 0o777,
        "fifo": stat.S_IFIFO | 0o644,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for m in [M(META[0], data=META[1]), *members]:
            name = m.name + "/" if m.kind == "dir" else m.name
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = modes[m.kind] << 16
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a name used twice, on purpose
                zf.writestr(info, m.link.encode() if m.kind == "sym" else m.data)
    return path


STEPS = "abcdefghijklmnop"


def cve_2025_4517_chain(dest: Path) -> tuple[list[M], str]:
    """Directories with long names, each reached by a one-letter symlink, so 'a/b/.../p'
    is short while its real path 'ddd.../ddd...' nearly fills PATH_MAX; then a link under it
    whose expansion passes PATH_MAX, which realpath(strict=False) then stops expanding.
    Returns the members and 'escape', a symlink the filter believes is inside but that
    is dest's parent on disk."""
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(dest)) - 1) // (len(STEPS) + 1))
    members: list[M] = []
    path = ""
    for step in STEPS:
        members.append(M(os.path.join(path, component), "dir"))
        members.append(M(os.path.join(path, step), "sym", link=component))
        path = os.path.join(path, component)
    long_link = os.path.join(*STEPS, "l" * 254)
    members.append(M(long_link, "sym", link=os.path.join(*[".."] * len(STEPS))))
    members.append(M("escape", "sym", link=os.path.join(long_link, "..")))
    return members, "escape"


# --- the corpus: (id, maker, expected error, needle, caps) --------------------------------

Maker = Callable[[Area], Path]


@dataclass(frozen=True)
class Case:
    id: str
    make: Maker
    error: type[StagingError]
    needle: str
    max_bytes: int = 2 * 1024**3
    max_files: int = 20000


def _cve_write_through(a: Area) -> Path:
    chain, escape = cve_2025_4517_chain(a.dest)
    # A .pth file beside the next interpreter's site-packages would run attacker code.
    payload = M(f"{escape}/sentinel/pwned.pth", data=b"import os; os.system('id')\n")
    return make_tar(a.src / "a.tgz", [*chain, payload])


def _cve_hardlink_overwrite(a: Area) -> Path:
    chain, escape = cve_2025_4517_chain(a.dest)
    return make_tar(
        a.src / "a.tgz",
        [*chain, M("flag", "hard", link=f"{escape}/keep.txt"), M("flag", data=b"pwned\n")],
    )


def _cve_symlink_then_file(a: Area) -> Path:
    chain, escape = cve_2025_4517_chain(a.dest)
    return make_tar(
        a.src / "a.tgz",
        [*chain, M("x", "sym", link=f"{escape}/sentinel/pwned"), M("x", data=b"pwned\n")],
    )


def _zip_cve_chain(a: Area) -> Path:
    # No member through the chain: zip's old writer made links last, but left them pointing out.
    chain, _escape = cve_2025_4517_chain(a.dest)
    return make_zip(a.src / "a.zip", chain)


def tar_case(
    id: str, members: Callable[[Area], list[M]], error: type[StagingError], needle: str, **caps: int
) -> Case:
    return Case(id, lambda a: make_tar(a.src / "a.tgz", members(a)), error, needle, **caps)


def zip_case(
    id: str, members: Callable[[Area], list[M]], error: type[StagingError], needle: str, **caps: int
) -> Case:
    return Case(id, lambda a: make_zip(a.src / "a.zip", members(a)), error, needle, **caps)


def _tar_declaring_a_terabyte(a: Area) -> Path:
    """A header that claims 1 TiB and no data behind it: refused on the header alone."""
    path = make_tar(a.src / "a.tar", [], mode="w")
    info = tarfile.TarInfo("mlruns/0/huge.bin")
    info.size = 1 << 40
    header = info.tobuf(tarfile.PAX_FORMAT)
    raw = path.read_bytes()
    # Put the header before the two zero blocks that end the archive.
    end = len(raw.rstrip(b"\0")) + (-len(raw.rstrip(b"\0")) % 512)
    path.write_bytes(raw[:end] + header + b"\0" * 1024)
    return path


def _gzip_bomb(a: Area) -> Path:
    return make_tar(a.src / "a.tgz", [M("mlruns/0/zeros.bin", data=bytes(64 << 20))])


def _zip_bomb(a: Area) -> Path:
    return make_zip(a.src / "a.zip", [M("mlruns/0/zeros.bin", data=bytes(64 << 20))])


def _zip_bomb_lying_sizes(a: Area) -> Path:
    """Central directory and local header both claim 100 bytes for 64 MiB of zeros."""
    path = make_zip(a.src / "a.zip", [M("mlruns/0/zeros.bin", data=bytes(64 << 20))])
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.rfind(signature)
        data[at + offset : at + offset + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _zip_overlapping_bomb(a: Area) -> Path:
    """Many central-directory entries sharing one compressed body (Fifield's trick)."""
    path = make_zip(a.src / "a.zip", [M("mlruns/0/zeros.bin", data=bytes(1 << 20))])
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x01\x02")
    end = data.rfind(b"PK\x05\x06")
    entry = bytes(data[at:end])
    name_len = int.from_bytes(entry[28:30], "little")
    copies = []
    for i in range(300):
        name = f"mlruns/0/z{i:08d}".encode()
        assert len(name) == name_len
        copies.append(entry[:46] + name + entry[46 + name_len :])
    tail = bytearray(data[end:])
    count = 1 + len(copies)
    tail[8:10] = tail[10:12] = count.to_bytes(2, "little")
    tail[12:16] = (len(data[at:end]) + sum(map(len, copies))).to_bytes(4, "little")
    path.write_bytes(bytes(data[:end]) + b"".join(copies) + bytes(tail))
    return path


CASES = [
    Case(
        "tar-cve-2025-4517-write-through", _cve_write_through, UnsafeArchive, "which is a symlink"
    ),
    Case("tar-cve-2025-4517-hardlink-overwrite", _cve_hardlink_overwrite, UnsafeArchive, "symlink"),
    Case("tar-cve-2025-4517-link-then-file", _cve_symlink_then_file, UnsafeArchive, "symlink"),
    tar_case(
        "tar-hard-link-out",
        lambda a: [M("pwned", "hard", link="../keep.txt")],
        UnsafeArchive,
        "'pwned' is a hard link to '../keep.txt', outside the staging directory",
    ),
    tar_case(
        "tar-hard-link-absolute",
        lambda a: [M("pwned", "hard", link=str(a.victim))],
        UnsafeArchive,
        "outside the staging directory",
    ),
    tar_case(
        "tar-hard-link-then-overwrite",
        lambda a: [M("h", "hard", link="mlruns/0/meta.yaml"), M("h", data=b"pwned\n")],
        UnsafeArchive,
        "more than once",
    ),
    tar_case(
        "tar-symlink-to-symlink",
        lambda a: [
            M("mlruns/0/f.txt"),
            M("l1", "sym", link="mlruns/0/f.txt"),
            M("l2", "sym", link="l1"),
        ],
        UnsafeArchive,
        "'l2' is a symlink to 'l1', a symlink; only links to regular files",
    ),
    tar_case(
        "tar-hard-link-to-symlink",
        lambda a: [
            M("mlruns/0/f.txt"),
            M("l1", "sym", link="mlruns/0/f.txt"),
            M("h", "hard", link="l1"),
        ],
        UnsafeArchive,
        "'h' is a hard link to 'l1', a symlink",
    ),
    tar_case(
        "tar-symlink-through-symlink-dotdot",
        lambda a: [
            M("up", "sym", link="mlruns/0/meta.yaml"),
            M("x", "sym", link="up/../mlruns/0/meta.yaml"),
        ],
        UnsafeArchive,
        "through 'up', a symlink",
    ),
    tar_case(
        "tar-dir-symlink-then-member-under-it",
        lambda a: [M("d", "sym", link="mlruns/0"), M("d/pwned")],
        UnsafeArchive,
        "'d/pwned' lies under 'd', which is a symlink",
    ),
    tar_case(
        "tar-dir-symlink-out-then-member-under-it",
        lambda a: [M("d", "sym", link="../sentinel"), M("d/pwned")],
        UnsafeArchive,
        "'d/pwned' lies under 'd', which is a symlink",
    ),
    tar_case(
        "tar-symlink-to-directory",
        lambda a: [M("latest", "sym", link="mlruns/0")],
        UnsafeArchive,
        "'latest' is a symlink to 'mlruns/0', a directory",
    ),
    tar_case(
        "tar-dangling-symlink",
        lambda a: [M("x", "sym", link="mlruns/9/nothing")],
        UnsafeArchive,
        "which the archive does not hold",
    ),
    tar_case(
        "tar-absolute-name",
        lambda a: [M(str(a.sentinel / "pwned"))],
        UnsafeArchive,
        "has an absolute path",
    ),
    tar_case(
        "tar-dotdot-name",
        lambda a: [M("../sentinel/pwned")],
        UnsafeArchive,
        "'../sentinel/pwned' leaves the staging directory",
    ),
    tar_case(
        "tar-newline-in-name",
        lambda a: [M("../pwned\nINFO staging finished")],
        UnsafeArchive,
        "'../pwned\\nINFO staging finished' leaves the staging directory",
    ),
    tar_case(
        "tar-dotdot-inside-name",
        lambda a: [M("mlruns/../../sentinel/pwned")],
        UnsafeArchive,
        "leaves the staging directory",
    ),
    tar_case("tar-char-device", lambda a: [M("dev", "chr")], UnsafeArchive, "'dev' is a device"),
    tar_case("tar-block-device", lambda a: [M("dev", "blk")], UnsafeArchive, "'dev' is a device"),
    tar_case(
        "tar-fifo", lambda a: [M("fifo", "fifo")], UnsafeArchive, "'fifo' is a device or fifo"
    ),
    tar_case(
        "tar-symlink-replaced-by-file",
        lambda a: [M("x", "sym", link="mlruns/0/meta.yaml"), M("x", data=b"pwned\n")],
        UnsafeArchive,
        "archive holds 'x' more than once (a symlink, then a regular file)",
    ),
    tar_case(
        "tar-file-replaced-by-symlink",
        lambda a: [M("x"), M("x", "sym", link="mlruns/0/meta.yaml")],
        UnsafeArchive,
        "archive holds 'x' more than once (a regular file, then a symlink)",
    ),
    tar_case(
        "tar-directory-replaced-by-symlink",
        lambda a: [M("x/f"), M("x", "sym", link="mlruns/0/meta.yaml"), M("x/g")],
        UnsafeArchive,
        "archive holds 'x' more than once (a directory, then a symlink)",
    ),
    tar_case(
        "tar-member-under-a-file",
        lambda a: [M("f"), M("f/pwned")],
        UnsafeArchive,
        "'f/pwned' lies under 'f', which is a regular file",
    ),
    Case("tar-header-claims-a-terabyte", _tar_declaring_a_terabyte, LimitExceeded, "over the cap"),
    Case("tar-gzip-bomb", _gzip_bomb, LimitExceeded, "over the cap of 1048576 bytes", 1 << 20),
    tar_case(
        "tar-member-count-bomb",
        lambda a: [M(f"mlruns/0/f{i}") for i in range(5000)],
        LimitExceeded,
        "archive holds 101 files, over the cap of 100",
        max_files=100,
    ),
    tar_case(
        "tar-implied-directory-bomb",
        lambda a: [M("a/" * 60 + "f")],
        LimitExceeded,
        "archive holds 62 directories, over the cap of 50",
        max_files=50,
    ),
    tar_case(
        "tar-deep-nesting",
        lambda a: [M("a/" * 1000 + "f")],
        UnsafeArchive,
        "is 1001 levels deep, over the limit of 64",
    ),
    zip_case(
        "zip-path-longer-than-fits",
        lambda a: [M(("x" * 200 + "/") * 21 + "f")],
        UnsafeArchive,
        "-byte path, longer than the",
    ),
    Case("zip-cve-2025-4517-chain", _zip_cve_chain, UnsafeArchive, "which is a symlink"),
    zip_case(
        "zip-dotdot-name",
        lambda a: [M("../sentinel/pwned")],
        UnsafeArchive,
        "'../sentinel/pwned' leaves the staging directory",
    ),
    zip_case(
        "zip-absolute-name",
        lambda a: [M(str(a.sentinel / "pwned"))],
        UnsafeArchive,
        "has an absolute path",
    ),
    zip_case(
        "zip-symlink-out",
        lambda a: [M("escape", "sym", link="../sentinel")],
        UnsafeArchive,
        "'escape' is a symlink to '../sentinel', outside the staging directory",
    ),
    zip_case(
        "zip-symlink-absolute",
        lambda a: [M("escape", "sym", link=str(a.victim))],
        UnsafeArchive,
        "outside the staging directory",
    ),
    zip_case(
        "zip-dir-symlink-then-member-under-it",
        lambda a: [M("d", "sym", link="mlruns/0"), M("d/pwned")],
        UnsafeArchive,
        "'d/pwned' lies under 'd', which is a symlink",
    ),
    zip_case(
        "zip-symlink-to-symlink",
        lambda a: [
            M("mlruns/0/f.txt"),
            M("l1", "sym", link="mlruns/0/f.txt"),
            M("l2", "sym", link="l1"),
        ],
        UnsafeArchive,
        "'l2' is a symlink to 'l1', a symlink",
    ),
    zip_case(
        "zip-symlink-to-directory",
        lambda a: [M("latest", "sym", link="mlruns/0")],
        UnsafeArchive,
        "'latest' is a symlink to 'mlruns/0', a directory",
    ),
    zip_case(
        "zip-symlink-replaced-by-file",
        lambda a: [M("x", "sym", link="mlruns/0/meta.yaml"), M("x", data=b"pwned\n")],
        UnsafeArchive,
        "more than once",
    ),
    zip_case(
        "zip-file-replaced-by-directory",
        lambda a: [M("x"), M("x", "dir"), M("x/pwned")],
        UnsafeArchive,
        "archive holds 'x' more than once (a regular file, then a directory)",
    ),
    zip_case(
        "zip-fifo", lambda a: [M("fifo", "fifo")], UnsafeArchive, "'fifo' is a device or fifo"
    ),
    Case("zip-bomb", _zip_bomb, LimitExceeded, "over the cap of 1048576 bytes", 1 << 20),
    Case("zip-bomb-lying-sizes", _zip_bomb_lying_sizes, StagingError, "", 1 << 20),
    Case("zip-overlapping-bomb", _zip_overlapping_bomb, LimitExceeded, "over the cap", 64 << 20),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_archive_is_refused_and_nothing_escapes(area: Area, case: Case) -> None:
    archive = case.make(area)
    stager = ArchiveStager(max_bytes=case.max_bytes, max_files=case.max_files)
    try:
        await asyncio.wait_for(stager.stage(str(archive), area.dest), HANG_GUARD)
    except Exception as exc:  # checked below, after the worst outcome
        raised: Exception | None = exc
    else:
        raised = None
    # First what matters most: whatever the staging did, nothing landed outside dest.
    assert_nothing_escaped(area)
    assert isinstance(raised, case.error), f"expected {case.error.__name__}, got {raised!r}"
    message = str(raised)
    assert case.needle in message, f"{case.needle!r} not in {message!r}"
    assert "\n" not in message and message, f"not a one-line reason: {message!r}"


# --- the writer's own net, for a link the plan did not foresee ----------------------------


def test_writer_never_follows_a_link_on_the_way(area: Area) -> None:
    area.dest.mkdir()
    (area.dest / "d").symlink_to(area.sentinel)
    (area.dest / "f").symlink_to(area.victim)
    with SafeTree(area.dest) as tree:
        with pytest.raises(UnsafeArchive, match="'d/pwned' would be written through 'd'"):
            tree.create(PurePosixPath("d/pwned"), 0o644)
        with pytest.raises(UnsafeArchive, match="'d/sub/pwned' would be written through 'd'"):
            tree.mkdir(PurePosixPath("d/sub/pwned"))
        with pytest.raises(UnsafeArchive, match="'f' is already there"):
            tree.create(PurePosixPath("f"), 0o644)
    assert not list(area.sentinel.iterdir())
    assert area.victim.read_bytes() == VICTIM_TEXT


def test_a_link_that_lands_elsewhere_on_disk_is_refused(
    area: Area, monkeypatch: pytest.MonkeyPatch
) -> None:
    area.dest.mkdir()
    (area.dest / "f").write_text("inside\n")
    plan = Plan()
    plan.add_file(PurePosixPath("f"), 7)
    plan.add_link(PurePosixPath("l"), "f", hard=False)
    # As if the text were computed wrongly: the check after creating must catch it.
    monkeypatch.setattr(Link, "text", property(lambda self: "../keep.txt"))
    with SafeTree(area.dest) as tree, pytest.raises(UnsafeArchive, match="does not lead to 'f'"):
        tree.link(plan.links()[0])


def test_declared_sizes_count_what_earlier_archives_wrote() -> None:
    budget = Budget(Caps(max_bytes=100, max_files=5), "archive")
    for _ in range(3):
        budget.add_file()
    with pytest.raises(LimitExceeded, match="archive holds 6 files, over the cap of 5"):
        budget.check_declared(3, 0, 0)


# --- what stays allowed -------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", ["tar", "zip"])
async def test_links_to_regular_files_are_kept_and_made_last(area: Area, fmt: str) -> None:
    members = [
        # The link comes before its target and before a member in its own directory.
        M("mlruns/0/latest.txt", "sym", link="../1/notes.txt"),
        M("mlruns/1/notes.txt", data=b"loss went down\n"),
        M("mlruns/0/other.txt", data=b"other\n"),
    ]
    if fmt == "tar":
        members.append(M("mlruns/copy.txt", "hard", link="./mlruns/1/notes.txt"))
        archive = make_tar(area.src / "a.tgz", members)
    else:
        archive = make_zip(area.src / "a.zip", members)

    staged = await ArchiveStager().stage(str(archive), area.dest)

    link = area.dest / "mlruns" / "0" / "latest.txt"
    assert os.readlink(link) == "../1/notes.txt"
    assert link.read_bytes() == b"loss went down\n"
    if fmt == "tar":
        copy = area.dest / "mlruns" / "copy.txt"
        assert not copy.is_symlink()
        assert copy.stat().st_ino == (area.dest / "mlruns" / "1" / "notes.txt").stat().st_ino
    assert staged.layout == "file-store"
    assert not list(area.sentinel.iterdir())
    assert area.victim.read_bytes() == VICTIM_TEXT


def test_symlink_text_is_re_aimed_without_detours(area: Area) -> None:
    """A link's text is rewritten from the resolved target: 'a/./b//../c' becomes 'c'."""
    plan = Plan()
    plan.add_file(PurePosixPath("x/c"), 1)
    plan.add_dir(PurePosixPath("x/b"))
    plan.add_link(PurePosixPath("x/l"), "./b//../c", hard=False)
    plan.add_link(PurePosixPath("y/z/l"), "../../x/c", hard=False)
    assert [link.text for link in plan.links()] == ["c", "../../x/c"]


# --- the same on Debian's own interpreter -------------------------------------------------

_INNER = """
import site, sys
repo, basetemp, *site_dirs = sys.argv[1:]
for d in site_dirs:
    site.addsitedir(d)
sys.path.insert(0, repo)
import tarfile
print("inner interpreter", sys.version.split()[0], "tarfile from", tarfile.__file__, flush=True)
import pytest
sys.exit(pytest.main([
    "-q", "-p", "no:cacheprovider", "--noconftest", "--basetemp", basetemp,
    "-k", "not on_debian_python",
    "tests/unit/test_staging.py", "tests/security/test_archive_escape.py",
]))
"""
# What the two modules need when this environment's packages cannot be reused (see below).
_VENV_PINS = ("-e", f"{REPO}[ui]", "pytest>=8,<10", "pytest-asyncio>=0.24,<2")


def debian_venv() -> Path:
    """A venv of Debian's python3.11 with the project, its UI extra (mlflow) and pytest, built
    once and cached: for an outer Python other than 3.11, whose compiled packages 3.11.2
    cannot load."""
    key = json.dumps([_VENV_PINS, (REPO / "setup.py").read_text()])
    target = cache_root() / f"debian-python311-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    python, ready = target / "bin" / "python", target / ".ready"
    if ready.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it: wait, reuse
        if not ready.exists():
            shutil.rmtree(target, ignore_errors=True)  # a build that was interrupted
            subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", str(target)], check=True)
            pip_install(python, *_VENV_PINS)
            ready.write_text("\n".join(_VENV_PINS) + "\n")
    return python


def debian_command(basetemp: Path) -> list[str]:
    repo_and_tmp = ["-c", _INNER, str(REPO), str(basetemp)]
    if sys.version_info[:2] == (3, 11):
        # Same CPython 3.11 ABI: Debian's standard library with this environment's packages,
        # so only the stdlib differs. -I: no user site, no PYTHON* variables; -S: not Debian's
        # dist-packages (the packages come from site.addsitedir); -B: no .pyc written.
        return [str(DEBIAN_PYTHON), "-I", "-S", "-B", *repo_and_tmp, *site.getsitepackages()]
    return [str(debian_venv()), "-I", "-B", *repo_and_tmp]


def test_staging_tests_pass_on_debian_python(tmp_path: Path) -> None:
    """Debian bookworm's python3.11 is 3.11.2: its tarfile has no filters and its realpath is
    the one CVE-2025-4517 beats. Both test modules must pass on it."""
    if not DEBIAN_PYTHON.exists():
        pytest.skip(f"{DEBIAN_PYTHON} is absent (tests/run.sh installs it on Debian)")
    if Path(sys.executable).resolve() == DEBIAN_PYTHON.resolve():
        pytest.skip("this session already runs on Debian's python3.11")
    done = subprocess.run(
        debian_command(tmp_path / "inner"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "inner interpreter 3.11" in output and "/usr/lib/python3.11/tarfile.py" in output, output
    assert done.returncode == 0, output[-6000:]
    assert " passed" in output and " failed" not in output, output[-6000:]
