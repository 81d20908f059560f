#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine with Python 3.11, then runs every check.
# Idempotent: on a machine that has it all, it only runs the checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# A Debian system Python refuses pip installs (PEP 668) unless told; pyenv/venv Pythons ignore this.
export PIP_BREAK_SYSTEM_PACKAGES=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: PostgreSQL and ActiveMQ servers (the tests start throwaway ones).
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)
# ActiveMQ (the STOMP intake tests start a throwaway broker; the package brings Java).
[ -f /usr/share/activemq/bin/activemq.jar ] || missing+=(activemq)
# Chromium (the browser tests drive Debian's with Playwright; Playwright downloads no browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Redis (the real iDDS the integration tests start keeps its agents' cache there).
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
# `python3 -m venv` (that iDDS's own venv, below): Debian's Python has ensurepip only with this.
"$PY" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# Podman and debootstrap (tests/images builds the images on a Debian base it makes: no registry).
command -v podman >/dev/null || missing+=(podman runc conmon fuse-overlayfs netavark aardvark-dns catatonit uidmap)
command -v debootstrap >/dev/null || missing+=(debootstrap)
# Debian's own Python (tests/wheel_checks installs the wheel into a venv made from it).
[ -x /usr/bin/python3.11 ] && /usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null || missing+=(python3.11-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# podman's settings for these machines (runc, cgroupfs, host network, ulimits it may set).
[ -f /etc/containers/containers.conf ] || as_root install -D -m 644 tests/images/containers.conf /etc/containers/containers.conf

# Python packages: the project with its UI runtime, demo, Rucio client, test and dev extras (pinned in setup.py).
"$PY" -m pip install -q --disable-pip-version-check -e '.[ui,demo,rucio,test,dev,docs]'
# The real iDDS (server + agents) runs from a venv of its own, pinned in tests/idds_server.py:
# built once here (about a minute) and cached; the test fixture would build it otherwise.
"$PY" -c 'from tests.idds_server import ensure_venv; ensure_venv()'
# So does panda-server (pinned in tests/panda_server.py; about 3 minutes the first time).
"$PY" -c 'from tests.panda_server import ensure_venv; ensure_venv()'

# The real Kubernetes control plane of tests/real_k8s: its binaries, shared next to the checkout
# (envtest's KUBEBUILDER_ASSETS in spirit). Without them those tests skip, or fail when CI is set.
if [ -z "${IDDS_VIS_K8S_ASSETS:-}" ] && [ -d ../shared/k8s ]; then
  export IDDS_VIS_K8S_ASSETS="$PWD/../shared/k8s"
fi
echo "== ruff";        "$PY" -m ruff check idds_vis tests
echo "== mypy";        "$PY" -m mypy
echo "== mkdocs";      NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict -q --site-dir "$(mktemp -d)"
echo "== pytest";      "$PY" -m pytest -q -p no:cacheprovider "$@"
