"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, from the binaries of ``$IDDS_VIS_K8S_ASSETS`` (``xz``-compressed, checked against
its ``SHA256SUMS``; see /work/shared/k8s/README.md), the way envtest runs one for Go controllers.

No kubelet and no container runtime: pods are scheduled on a fake Node and never run; the tests'
stand-in kubelet (``kubelet.py``) writes their status. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import ipaddress
import json
import lzma
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ENV_ASSETS = "IDDS_VIS_K8S_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE = "fake-node"
# The UIs' public host: a name of the reserved .test domain, which resolves nowhere; only the
# agent processes of these tests map it to the stand-in ingress on loopback (agent_main.py).
INGRESS_HOST = "vis.idds-vis.test"
# Guards against a hang only (it takes 10-20 s on 2 cores), not timing assertions.
START_GUARD = 120.0
STOP_GUARD = 20.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class AssetsMissing(Exception):
    """The binaries are not here: the tests skip (or fail when CI is set)."""


def assets_dir() -> Path:
    given = os.environ.get(ENV_ASSETS)
    if not given:
        raise AssetsMissing(f"${ENV_ASSETS} is not set (the Kubernetes binaries' directory)")
    path = Path(given)
    missing = [b for b in BINARIES if not (path / f"{b}.xz").is_file()]
    if missing or not (path / "SHA256SUMS").is_file():
        raise AssetsMissing(f"${ENV_ASSETS}={given} lacks {', '.join(missing) or 'SHA256SUMS'}")
    return path


def _sums(assets: Path) -> dict[str, str]:
    sums = {}
    for line in (assets / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name.lstrip("*")] = digest
    return sums


def unpack(assets: Path, cache_root: Path | None = None) -> Path:
    """The binaries, unpacked once into a cache named after their checksums (a new set of
    binaries gets a new directory). Each archive is checked against SHA256SUMS first."""
    sums = _sums(assets)
    key = hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = root / "idds-vis" / f"k8s-{key}"
    for name in BINARIES:
        dest = target / name
        if dest.is_file() and os.access(dest, os.X_OK):
            continue
        packed = assets / f"{name}.xz"
        digest = hashlib.sha256(packed.read_bytes()).hexdigest()
        if sums.get(packed.name) != digest:
            raise AssetsMissing(f"{packed} does not match its SHA256SUMS entry")
        target.mkdir(parents=True, exist_ok=True)
        # Into a temporary file, renamed when complete: a run killed midway leaves no half
        # binary, and two runs unpacking at once both end with a whole one.
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as out, lzma.open(packed) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(out.name, 0o755)
        os.replace(out.name, dest)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- certificates ----------------------------------------------------------------------------
@dataclass
class Pki:
    directory: Path
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ca_cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idds-vis-test-ca")])
        self.ca_cert = (
            self._builder(name, self.ca_key.public_key(), name)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.write("ca.crt", self.ca_cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, key: object, issuer: x509.Name) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
        )

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(
        self,
        stem: str,
        cn: str,
        org: str | None = None,
        server: bool = False,
        hosts: tuple[str, ...] = ("localhost", "kubernetes.default.svc"),
    ) -> None:
        """``stem.crt``/``stem.key``: a client certificate (CN user, O group) or a serving one
        for 127.0.0.1 and ``hosts``."""
        assert self.ca_cert is not None
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        usage = x509.oid.ExtendedKeyUsageOID
        builder = self._builder(x509.Name(attrs), key.public_key(), self.ca_cert.subject)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]),
            critical=False,
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    *(x509.DNSName(host) for host in hosts),
                ]),
                critical=False,
            )  # fmt: skip
        cert = builder.sign(self.ca_key, hashes.SHA256())
        self.write(f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))
        self.write(f"{stem}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip

    def service_account_keys(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.write("sa.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip
        self.write("sa.pub", key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))  # fmt: skip


# --- the processes ---------------------------------------------------------------------------
@dataclass
class ControlPlane:
    """What the tests need of a running control plane."""

    bin_dir: Path
    work: Path
    server: str  # https://127.0.0.1:PORT
    admin_kubeconfig: Path
    procs: dict[str, subprocess.Popen[bytes]]
    started_in: float = 0.0

    @property
    def ca_file(self) -> Path:
        return self.work / "pki" / "ca.crt"

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        config = str(kubeconfig or self.admin_kubeconfig)
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", config, *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def token_kubeconfig(self, path: Path, namespace: str, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token only (no client certificate)."""
        write_kubeconfig(path, self.server, self.ca_file, namespace, {"token": token})
        return path

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.procs.values():
            status = Path(f"/proc/{proc.pid}/status")
            for line in status.read_text().splitlines() if status.exists() else []:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def pause(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGCONT)

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")[-chars:]


def write_kubeconfig(path: Path, server: str, ca: Path, namespace: str,
                     user: dict[str, str]) -> None:  # fmt: skip
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca)}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test",
                      "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
    }  # fmt: skip
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o600)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when pytest dies, even by SIGKILL (no teardown runs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(work: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = (work / f"{name}.log").open("wb")
    # Their own session: a Ctrl-C of pytest reaches them only through the fixture's teardown.
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)  # fmt: skip


def _wait(what: str, ready: Callable[[], bool], procs: dict[str, subprocess.Popen[bytes]],
          work: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + START_GUARD
    while not ready():
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (work / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited ({proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {START_GUARD:.0f} s")
        time.sleep(0.2)  # another process's state; there is nothing to wait on instead


def _answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def control_plane(bin_dir: Path, work: Path) -> Iterator[ControlPlane]:
    started = time.monotonic()
    pki_dir = work / "pki"
    pki_dir.mkdir(parents=True)
    pki = Pki(pki_dir)
    pki.issue("serving", "kube-apiserver", server=True)
    pki.issue("admin", "idds-vis-test-admin", org="system:masters")
    pki.issue("kcm", "system:kube-controller-manager")
    pki.issue("scheduler", "system:kube-scheduler")
    pki.service_account_keys()
    # The stand-in ingress controller's certificate (tests/real_k8s/ingress.py).
    pki.issue("ingress", INGRESS_HOST, server=True, hosts=(INGRESS_HOST,))
    p = {name: str(pki_dir / name) for name in os.listdir(pki_dir)}

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfigs = {}
    for stem in ("admin", "kcm", "scheduler"):
        kubeconfigs[stem] = work / f"{stem}.kubeconfig"
        user = {"client-certificate": p[f"{stem}.crt"], "client-key": p[f"{stem}.key"]}
        write_kubeconfig(kubeconfigs[stem], server, pki_dir / "ca.crt", "default", user)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["etcd"] = _spawn(work, "etcd", [
            str(bin_dir / "etcd"), "--data-dir", str(work / "etcd"),
            "--client-url", f"http://127.0.0.1:{etcd_port}",
            "--peer-url", f"http://127.0.0.1:{peer_port}",
        ])  # fmt: skip
        etcd_log = work / "etcd.log"
        _wait("etcd is ready", lambda: "etcd ready" in etcd_log.read_text(errors="replace"),
              procs, work)  # fmt: skip
        procs["kube-apiserver"] = _spawn(work, "kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--client-ca-file={p['ca.crt']}",
            f"--tls-cert-file={p['serving.crt']}", f"--tls-private-key-file={p['serving.key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            f"--service-account-key-file={p['sa.pub']}",
            f"--service-account-signing-key-file={p['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=Node,RBAC", "--endpoint-reconciler-type=none",
            # OpenShift's default: blockOwnerDeletion needs update on the owner's finalizers.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            # Expired watch versions (410 Gone) and continue tokens within seconds.
            "--etcd-compaction-interval=5s",
        ])  # fmt: skip
        context = ssl.create_default_context(cafile=p["ca.crt"])
        context.load_cert_chain(p["admin.crt"], p["admin.key"])
        _wait("kube-apiserver is ready", lambda: _answers(f"{server}/readyz", context), procs, work)
        procs["kube-controller-manager"] = _spawn(work, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kubeconfigs['kcm']}",
            f"--authentication-kubeconfig={kubeconfigs['kcm']}",
            f"--authorization-kubeconfig={kubeconfigs['kcm']}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p['sa.key']}", f"--root-ca-file={p['ca.crt']}",
            "--leader-elect=false",
            # Without the node lifecycle controller the fake Node is never evicted.
            "--controllers=*,-node-lifecycle-controller,-cloud-node-lifecycle-controller",
        ])  # fmt: skip
        sched = str(kubeconfigs["scheduler"])
        procs["kube-scheduler"] = _spawn(work, "kube-scheduler", [
            str(bin_dir / "kube-scheduler"), f"--kubeconfig={sched}",
            f"--authentication-kubeconfig={sched}", f"--authorization-kubeconfig={sched}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        ])  # fmt: skip
        plane = ControlPlane(bin_dir, work, server, kubeconfigs["admin"], procs)
        _fake_node(plane)
        plane.started_in = time.monotonic() - started
        yield plane
    finally:
        # Throwaway state: SIGKILL (kube-apiserver's graceful stop takes many seconds, and a
        # SIGSTOPped process would not act on SIGTERM at all).
        for name in reversed(list(procs)):
            procs[name].kill()
        for proc in procs.values():
            proc.wait(timeout=STOP_GUARD)


def _fake_node(plane: ControlPlane) -> None:
    """A Node the scheduler binds pods to: Ready, with room, and without the not-ready taint
    admission adds at creation."""
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}  # fmt: skip
    plane.kubectl("create", "-f", "-", stdin=json.dumps(node))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    room = {"cpu": "64", "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti"}
    status = {"status": {
        "capacity": room, "allocatable": room,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "stand-in", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
    }}  # fmt: skip
    plane.kubectl("patch", "node", NODE, "--subresource=status", "--type=merge",
                  "-p", json.dumps(status))  # fmt: skip
    plane.kubectl("taint", "node", NODE, "node.kubernetes.io/not-ready:NoSchedule-", check=False)
