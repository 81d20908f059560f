"""Building the images with podman where no registry is reachable, once per content.

The base is made with ``debootstrap`` (Debian's python3 3.11.2 and its venv module) and
imported; each image is tagged with a hash of what goes into it (its Dockerfile, the base and
every file the build context lets in), so a rerun on an unchanged tree reuses it. pip inside the
build reaches the package index the way this host does: the host's pip configuration goes in as
a build secret (never into a layer), with its CA bundle as a second one, and any local
directories it names (find-links, file:// indexes, constraints) are mounted read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PODMAN = "podman"
# Python, its venv module (pip comes from ensurepip) and CA certificates; nothing else.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What a fresh debootstrap leaves that no image needs: the downloaded .debs, apt's lists, docs.
BASE_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
              "usr/share/locale", "usr/share/info")  # fmt: skip
BUILD_TIMEOUT = 1800.0


class PodmanMissing(RuntimeError):
    pass


def run(*args: str, timeout: float = BUILD_TIMEOUT, **kw: object) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                          **kw)  # type: ignore[call-overload]  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} … failed ({done.returncode}):\n"
                           f"{done.stdout[-4000:]}{done.stderr[-4000:]}")  # fmt: skip
    out: str = done.stdout
    return out


def require_podman() -> None:
    if shutil.which(PODMAN) is None or shutil.which("debootstrap") is None:
        raise PodmanMissing("podman or debootstrap is not installed (tests/run.sh installs them)")
    if not Path("/etc/containers/containers.conf").exists():
        raise PodmanMissing("/etc/containers/containers.conf is missing (tests/run.sh copies it)")


def image_exists(tag: str) -> bool:
    return subprocess.run([PODMAN, "image", "exists", tag], check=False).returncode == 0


def apt_mirror() -> str:
    """The Debian mirror apt already uses here (deb822 or one-line sources)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = path.read_text()
        if re.search(r"^Suites:.*\bbookworm\b", text, re.M):
            match = re.search(r"^URIs:\s*(\S+)", text, re.M)
            if match:
                return match.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", listing.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base() -> str:
    """A bookworm minbase with Debian's Python, as ``localhost/idds-vis-base:<hash>``."""
    key = hashlib.sha256(json.dumps([BASE_PACKAGES, BASE_PRUNE]).encode()).hexdigest()[:12]
    tag = f"localhost/idds-vis-base:bookworm-{key}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="idds-vis-base-") as tmp:
        root = Path(tmp) / "root"
        run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            "bookworm", str(root), apt_mirror())  # fmt: skip
        for rel in BASE_PRUNE:
            shutil.rmtree(root / rel, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            run(PODMAN, "import", "-", tag, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
    return tag


def context_files() -> list[Path]:
    """What the Dockerfiles COPY (``.dockerignore`` lets in these and nothing else)."""
    files = [ROOT / ".dockerignore", ROOT / "setup.py", ROOT / "README.md"]
    for path in sorted((ROOT / "idds_vis").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return files


def content_key(dockerfile: Path, base: str) -> str:
    digest = hashlib.sha256(base.encode())
    for path in [dockerfile, *context_files()]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PipForBuild:
    """``podman build`` arguments that give pip in the build this host's index and CA bundle."""

    args: tuple[str, ...]


def host_pip_config(workdir: Path) -> PipForBuild:
    """This host's effective pip settings as one file, for the build secret ``pip.conf``."""
    listed = run(sys.executable, "-m", "pip", "config", "list", timeout=60)
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.startswith((":env:.", "global.", "install.")):
            continue
        name = key.split(".", 1)[1]
        settings[name] = value.strip().strip("'\"")
    # PIP_* environment variables count as much as the files do for the host's own pip.
    for env, value in os.environ.items():
        if env.startswith("PIP_") and env not in ("PIP_CONFIG_FILE", "PIP_BREAK_SYSTEM_PACKAGES"):
            settings.setdefault(env[4:].lower().replace("_", "-"), value)
    args: list[str] = []
    mounts: set[str] = set()
    cert = settings.pop("cert", None) or os.environ.get("SSL_CERT_FILE")
    if cert and Path(cert).is_file():
        args += ["--secret", f"id=ca.crt,src={cert}"]
        settings["cert"] = "/run/secrets/ca.crt"
    for name in ("find-links", "extra-index-url", "index-url", "constraint"):
        for item in settings.get(name, "").split():
            local = Path(item.removeprefix("file://"))
            if not (local.is_absolute() and local.exists()):
                continue
            # A file:// index links its files relative to itself (../files/x.whl): mount the
            # directory above it; a constraints file's directory; a find-links directory.
            is_index = name.endswith("index-url")
            mounts.add(str(local.parent if is_index or not local.is_dir() else local))
    for mount in sorted(mounts):
        args += ["--volume", f"{mount}:{mount}:ro"]
    conf = workdir / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    conf.chmod(0o600)
    args += ["--secret", f"id=pip.conf,src={conf}"]
    return PipForBuild(tuple(args))


def ensure_image(name: str, base: str, pip: PipForBuild) -> str:
    """``images/<name>.Dockerfile`` built on ``base``, tagged by content; reused when present."""
    dockerfile = ROOT / "images" / f"{name}.Dockerfile"
    tag = f"localhost/idds-vis-{name}:test-{content_key(dockerfile, base)}"
    if image_exists(tag):
        return tag
    run(PODMAN, "build", "--network=host", "--layers", "--build-arg", f"BASE={base}",
        *pip.args, "-f", str(dockerfile), "-t", tag, str(ROOT))  # fmt: skip
    # Older builds of this image would pile up with every change of the tree: keep the newest.
    listed = run(PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}",
                 f"localhost/idds-vis-{name}", timeout=60)  # fmt: skip
    stale = [t for t in listed.split() if t.startswith(f"{tag.split(':')[0]}:test-") and t != tag]
    if stale:
        subprocess.run([PODMAN, "rmi", *stale], capture_output=True, timeout=300, check=False)
    return tag


def image_size(tag: str) -> int:
    return int(run(PODMAN, "image", "inspect", "--format", "{{.Size}}", tag, timeout=60))
