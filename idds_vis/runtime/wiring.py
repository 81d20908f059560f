"""Builds the agent and its adapters from settings."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from idds_vis import __version__
from idds_vis.agent.clock import SystemClock
from idds_vis.agent.health import Health, Heartbeat, WatchTracker, add_agent_checks, install
from idds_vis.agent.intake import Intake, MessageTrust
from idds_vis.agent.metrics import AgentMetrics
from idds_vis.agent.panda_tasks import PandaArtefacts
from idds_vis.agent.quotas import QuotaQueue
from idds_vis.agent.replicas import Coordination
from idds_vis.agent.resolver import TaskResolver
from idds_vis.agent.service import Agent
from idds_vis.deploy.kubernetes.client import KubeClient
from idds_vis.deploy.kubernetes.deployer import KubernetesDeployer
from idds_vis.deploy.kubernetes.lease import KubeLeaseStore
from idds_vis.deploy.kubernetes.settings import (
    EgressRule,
    KubeSettings,
    parse_egress,
    ui_namespace,
)
from idds_vis.deploy.kubernetes.standby import StandbyPods
from idds_vis.deploy.local import (
    POOL_MEMBER,
    SERVE_UI,
    STAND_IN_POOL_MEMBER,
    STAND_IN_UI,
    LocalProcessDeployer,
)
from idds_vis.deploy.probe import HttpReadinessProbe
from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.quotas import Limits
from idds_vis.domain.senders import AUTH_MODES, parse_keys
from idds_vis.domain.source_policy import AddressPolicy, MessageSources, PolicyError, SourcePolicy
from idds_vis.ledger import SqlLedger
from idds_vis.ledger.leases import SqlClaims, SqlLeases
from idds_vis.ledger.urls import async_url, parse_async_url
from idds_vis.ledger.urls import sqlite_file as ledger_sqlite_file
from idds_vis.lookup import PandaClientTasks, PandaSettings
from idds_vis.lookup.idds import IddsClientWorks, IddsSettings
from idds_vis.ports import Clock, Deployer, Ledger
from idds_vis.ports.lease import LeaseStore, WatchObserver
from idds_vis.ports.ledger import AccessLedger
from idds_vis.runtime.config import Settings
from idds_vis.sources.stomp import StompSettings, StompSource
from idds_vis.sources.stomp_remote import FastIgnore
from idds_vis.staging import ArchiveStager
from idds_vis.staging.credentials import CredentialFiles, Credentials
from idds_vis.staging.guarded import GuardedStager

log = logging.getLogger(__name__)


def credential_files(settings: Settings) -> CredentialFiles:
    """Where the artefact sources' credentials are; read afresh at each use."""
    return CredentialFiles(
        http_token_files=dict(settings.http_token_files),
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_file=settings.s3_access_key_file,
        s3_secret_key_file=settings.s3_secret_key_file,
        rucio_host=settings.rucio_host,
        rucio_auth_host=settings.rucio_auth_host,
        rucio_account=settings.rucio_account,
        rucio_auth_type=settings.rucio_auth_type,
        rucio_vo=settings.rucio_vo,
        rucio_username=settings.rucio_username,
        rucio_password_file=settings.rucio_password_file,
        rucio_token_file=settings.rucio_token_file,
        rucio_x509_proxy_file=settings.rucio_x509_proxy_file,
        rucio_ca_cert=settings.rucio_ca_cert,
        rucio_rse=settings.rucio_rse,
    )


def sqlite_file(settings: Settings) -> Path | None:
    """The ledger's SQLite file (also when database_url is a bare path), or None when the
    ledger is not a SQLite file (PostgreSQL, in-memory)."""
    try:
        url = parse_async_url(settings.db_url)
    except (ValueError, ArgumentError):
        return None
    return ledger_sqlite_file(url)


async def open_ledger(ledger: Ledger, settings: Settings) -> None:
    """Open (and create) the ledger; a database that cannot be reached or refuses is an
    InvalidRequest of one line naming it (its password hidden)."""
    try:
        await ledger.open()
    except (OSError, SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or exc
        if isinstance(reason, OSError) and reason.errno:
            text = os.strerror(reason.errno)
        else:
            text = " ".join(str(reason).split()) or type(reason).__name__
        where = make_url(async_url(settings.db_url)).render_as_string(hide_password=True)
        raise InvalidRequest(f"cannot open the ledger {where}: {text}") from None


@contextlib.contextmanager
def agent_lock(settings: Settings) -> Iterator[None]:
    """One agent per SQLite ledger (several need PostgreSQL): an OS lock (``flock``) on
    ``<ledger>.agent-lock`` next to the file, held while the agent runs and released by the
    kernel when the process ends, however it ends (SIGKILL, a crash): no stale lock to clear.
    A second agent is refused with an InvalidRequest saying so; the commands that only read
    or write records (``request``, ``list``, ``web``) take no lock."""
    db = sqlite_file(settings)
    if db is None:
        yield
        return
    lock = db.with_name(db.name + ".agent-lock")
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as build_ledger makes it
    # O_CLOEXEC: the UI processes the agent starts (and which outlive it) never hold the lock.
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise InvalidRequest(
            f"another agent{who} already runs on the SQLite ledger {db}: SQLite is for one agent;"
            " stop that one first, or give every agent the same PostgreSQL database_url to run"
            " several"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_cluster_access(settings: Settings) -> None:
    """With ``deployer: kubernetes``, the credentials the agent will use must be there at start:
    a ``kubeconfig`` file, or (without one) the service account of the pod it runs in.
    Otherwise every call would fail and be retried forever, one warning every few seconds."""
    if settings.deployer != "kubernetes":
        return
    if settings.kubeconfig:
        if not Path(settings.kubeconfig).expanduser().is_file():
            raise InvalidRequest(f"setting kubeconfig: no such file {settings.kubeconfig}")
    elif not os.environ.get("KUBERNETES_SERVICE_HOST") or not Path(SERVICE_ACCOUNT).is_dir():
        raise InvalidRequest(
            "deployer kubernetes without a kubeconfig setting needs the service account of the"
            f" pod it runs in, and there is none here ({SERVICE_ACCOUNT}): set kubeconfig"
        )


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def after_stop(settings: Settings, live: int) -> str:
    """What the agent says as it stops: the UIs are not stopped with it, and who ends them."""
    if live == 0:
        return "agent stopped; no UI is running"
    many = f"{live} UIs keep" if live != 1 else "1 UI keeps"
    if settings.deployer == "kubernetes":
        where = f"in namespace {ui_namespace(settings.namespace, settings.ui_namespace)}"
        backstop = (
            "; their janitor/expires annotation lets kube-janitor end them should no agent return"
        )
    else:
        where = "as processes of their own on this machine"
        backstop = ""
        if web_base(settings):
            backstop = (
                "; they are reached through the web app's proxy, so their URLs answer again once"
                " an agent or `idds-vis web` serves it"
            )
    return (
        f"agent stopped; {many} running {where}: the reaper of the next agent on this ledger"
        " (or of another replica) ends each at its expiry, after its start-up reconcile adopts"
        f" them; `idds-vis teardown --task ID` ends one now{backstop}"
    )


def build_ledger(settings: Settings) -> SqlLedger:
    # A new state directory is this user's only (red team, issue 18): it holds the UIs' data,
    # logs and secrets. An existing one keeps the mode its operator gave it.
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite_file(settings)
    if db is not None:
        private_ledger_file(db)
    return SqlLedger(settings.db_url)


def private_ledger_file(db: Path) -> None:
    """The SQLite ledger holds every UI's URL, whose path is the UI's capability where no web
    app guards it: made 0600 (SQLite gives its journal and WAL files the same mode), and an
    existing one made unreadable to other users (group bits kept: a deliberate shared group)."""
    try:
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except FileExistsError:
        with contextlib.suppress(OSError):  # not ours to change (another owner): leave it
            mode = db.stat().st_mode & 0o777
            if mode & 0o007:
                db.chmod(mode & ~0o007)
    except OSError:
        pass  # SQLite's own open then says what is wrong, in one line (open_ledger)


def ui_egress(settings: Settings) -> tuple[EgressRule, ...]:
    try:
        return parse_egress(settings.ui_egress)
    except ValueError as exc:
        raise InvalidRequest(f"setting {exc}") from None


def build_deployer(
    settings: Settings,
    metrics: AgentMetrics | None = None,
    watches: WatchObserver | None = None,
) -> Deployer:
    if settings.deployer == "kubernetes":
        if settings.exposure not in ("ingress", "route"):
            raise InvalidRequest(
                f"exposure must be 'ingress' or 'route', not {settings.exposure!r}"
            )
        try:  # the UIs' namespace; the Lease stays in the agent's (build_coordination)
            where = ui_namespace(settings.namespace, settings.ui_namespace)
        except ValueError as exc:
            raise InvalidRequest(f"setting {exc}") from None
        ks = KubeSettings(
            namespace=where,
            agent_namespace=settings.namespace,  # its pods probe (and proxy to) the UIs
            image=settings.ui_image,
            public_host=settings.public_host,
            exposure="route" if settings.exposure == "route" else "ingress",
            ingress_class=settings.ingress_class,
            web_url=settings.web_url,  # forward-auth needs the address nginx reaches
            egress=ui_egress(settings),
            allow_private_addresses=tuple(settings.allow_private_addresses),
            start_seconds=int(settings.start_timeout.total_seconds()),
            max_bytes=settings.max_bytes,
            max_files=settings.max_files,
        )
        files = credential_files(settings)
        kube = KubeClient(settings.kubeconfig, on_error=metrics.kube_error if metrics else None)
        standby = None
        size = settings.ui_pool.get("mlflow", 0)
        if size and not settings.ui_pool_kubernetes:
            log.warning("ui_pool is set but keeps no standby pods with deployer: kubernetes "
                        "unless ui_pool_kubernetes is true (experimental)")  # fmt: skip
        elif size:
            standby = StandbyPods(  # issue 18, experimental (deploy/kubernetes/standby.py)
                ks, kube, size=size,
                max_age=settings.ui_pool_max_age.total_seconds(),
                agent_version=f"idds-vis {__version__}", observer=metrics,
            )  # fmt: skip
        return KubernetesDeployer(
            ks,
            kube,
            # The UI pod stages the data itself: the Secret carries what its source needs.
            secrets_for=lambda source: files.load().pod_env(source),
            watches=watches,
            standby=standby,
        )
    if settings.deployer != "local":
        raise InvalidRequest(f"unknown deployer {settings.deployer!r}: use 'local' or 'kubernetes'")
    return LocalProcessDeployer(
        settings.state_dir,
        label=settings.ui_label,
        bind_host=settings.bind_host,
        public_host=settings.public_host,
        ui_argv=STAND_IN_UI if settings.ui_stub else SERVE_UI,
        proxy_base=web_base(settings),
        pool_size=settings.ui_pool.get("mlflow", 0),  # issue 18: the tool local UIs serve
        pool_max_age=settings.ui_pool_max_age.total_seconds(),
        pool_argv=STAND_IN_POOL_MEMBER if settings.ui_stub else POOL_MEMBER,
        pool_observer=metrics,
    )


def web_base(settings: Settings) -> str | None:
    """The web app's public base URL, when there is a web app: local UIs are then reached
    through its proxy only (issue 17)."""
    if settings.web_url:
        return settings.web_url.rstrip("/")
    if settings.web_port:
        return f"http://{settings.web_host}:{settings.web_port}"
    return None


def build_agent(settings: Settings) -> Agent:
    metrics = AgentMetrics()
    watches = WatchTracker()
    ledger = build_ledger(settings)
    clock = SystemClock()
    agent = Agent(
        metrics=metrics,
        source_resolver=build_artefacts(settings),
        ledger=ledger,
        stager=ArchiveStager(
            max_bytes=settings.max_bytes,
            max_files=settings.max_files,
            credentials=credential_files(settings).load,
        ),
        deployer=build_deployer(settings, metrics, watches),
        probe=HttpReadinessProbe(),
        clock=clock,
        workers=settings.workers,
        reconcile_interval=settings.reconcile_interval.total_seconds(),
        start_timeout=settings.start_timeout.total_seconds(),
        max_ttl=settings.max_ttl,
        # Unique per process, also when a restarted container gets the same host name and pid:
        # a replica's claims must never look like those of the one before it.
        agent_id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
        coordination=build_coordination(settings, ledger, clock, metrics),
    )
    # Sources named by messages: checked against the policy again and fetched under the
    # address guard; the agent's http tokens go only to hosts message_sources lists by name.
    agent.pipeline.message_stager = GuardedStager(
        ArchiveStager(
            max_bytes=settings.max_bytes,
            max_files=settings.max_files,
            credentials=message_credentials(settings),
        ),
        source_policy(settings),
    )
    health = install(agent, Health(Heartbeat(threshold=settings.stall_threshold.total_seconds())))
    add_agent_checks(health, agent)
    health.add_check("watches", watches.check)
    return agent


async def free_dead_leases(settings: Settings, ledger: Ledger) -> None:
    """Under ``agent_lock`` on a SQLite ledger no other agent runs on it: its leases are a
    dead agent's (a SIGKILL, a crash, an OOM kill). Freed at once, the start-up reconcile and
    the warm pool do not wait up to ``lease_ttl`` for them to lapse (an operator's first run
    with the pool found requests starting cold in that wait). The Kubernetes deployer's leader
    lease is a Lease in the cluster, shared with no ledger: left to lapse."""
    if sqlite_file(settings) is None or not isinstance(ledger, SqlLedger):
        return
    freed = await SqlLeases(ledger.engine).free_all()
    if freed:
        log.info("freed %d lease(s) a previous agent on this ledger held", freed)


def build_coordination(
    settings: Settings, ledger: SqlLedger, clock: Clock, metrics: AgentMetrics | None = None
) -> Coordination:
    """Leases for several replicas: the leader lease is a Kubernetes Lease in cluster mode
    (in the namespace the UIs go to), else in the ledger; membership and claims are in the
    ledger, which every replica shares."""
    members = SqlLeases(ledger.engine)
    leader: LeaseStore = members
    if settings.deployer == "kubernetes":
        kube = KubeClient(settings.kubeconfig, on_error=metrics.kube_error if metrics else None)
        leader = KubeLeaseStore(kube, settings.namespace, clock)
    return Coordination(
        leader=leader,
        members=members,
        claims=SqlClaims(ledger.engine),
        ttl=settings.lease_ttl.total_seconds(),
    )


def build_intake(settings: Settings, agent: Agent) -> tuple[StompSource, Intake] | None:
    """The broker intake, when the settings name a broker."""
    if not settings.stomp_hosts:
        return None
    hosts = []
    for entry in settings.stomp_hosts:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidRequest(f"stomp host {entry!r} must be written host:port")
        hosts.append((host, int(port)))
    try:
        stomp = StompSettings(
            hosts=hosts,
            subscriptions=settings.stomp_subscriptions,
            user=settings.stomp_user,
            password=settings.stomp_password,
            dead_letter_destination=settings.stomp_dead_letter,
            relay_queue=settings.stomp_relay_queue or None,
            prefetch=settings.stomp_prefetch,
            relay_prefetch=settings.stomp_relay_prefetch,
        )
    except ValueError as exc:
        raise InvalidRequest(f"stomp settings: {exc}") from exc
    source = StompSource(stomp)
    limits = quota_limits(settings)
    quotas = None
    if limits.any and isinstance(agent.ledger, AccessLedger):
        quotas = QuotaQueue(agent, agent.ledger, limits)
    intake = Intake(
        source,
        agent,
        resolver=build_resolver(settings),
        on_outcome=lambda _delivery, outcome, _detail: agent.metrics.intake_outcome(outcome.value),
        concurrency=INTAKE_CONCURRENCY,
        trust=message_trust(settings),
        quotas=quotas,
    )
    # Most of a shared stream is not for us: parsed and acked in the receiver process.
    intake.on_fast_ignore = agent.metrics.intake_ignored
    source.fast_ignore = FastIgnore(intake.parse_options, intake.fast_ignored)
    return source, intake


# Deliveries the intake handles at once (each still acked only after its own commit): the
# broker's prefetch (the relay queue's, 100) bounds them anyway; 8 keep SQLite busy, not queued.
INTAKE_CONCURRENCY = 8


def build_resolver(settings: Settings) -> TaskResolver:
    """What decides whether a PanDA task or an iDDS work wants a visualization."""
    idds = None
    if settings.idds_host:
        idds = IddsClientWorks(
            IddsSettings(
                host=settings.idds_host,
                auth_type=settings.idds_auth_type,
                x509_proxy=settings.idds_x509_proxy,
                oidc_token_file=settings.idds_oidc_token_file,
                vo=settings.idds_vo,
            )
        )
    return TaskResolver(idds=idds, panda=build_panda(settings))


def build_artefacts(settings: Settings) -> PandaArtefacts | None:
    """Finds a PanDA task's artefacts (and checks it is finished), when PanDA is configured."""
    panda = build_panda(settings)
    if panda is None:
        return None
    return PandaArtefacts(
        panda, task_source=settings.panda_source, outputs_source=settings.panda_outputs_source
    )


def build_panda(settings: Settings) -> PandaClientTasks | None:
    if not settings.panda_url:
        return None
    try:
        panda = PandaSettings(
            url=settings.panda_url,
            auth="x509" if settings.panda_auth == "x509" else "oidc",
            token_file=Path(settings.panda_token_file) if settings.panda_token_file else None,
            vo=settings.panda_vo,
            proxy_file=Path(settings.panda_proxy_file) if settings.panda_proxy_file else None,
            ca_dir=Path(settings.panda_ca_dir) if settings.panda_ca_dir else None,
        )
    except ValueError as exc:
        raise InvalidRequest(f"panda settings: {exc}") from None
    if settings.panda_auth not in ("oidc", "x509"):
        raise InvalidRequest(f"panda_auth must be 'oidc' or 'x509', not {settings.panda_auth!r}")
    return PandaClientTasks(panda)


# -- trust in broker messages (docs/how-to/broker-messages.md) --------------------------------


def source_policy(settings: Settings) -> SourcePolicy:
    try:
        return SourcePolicy(
            sources=MessageSources.from_setting(settings.message_sources),
            addresses=AddressPolicy.from_setting(settings.allow_private_addresses),
        )
    except PolicyError as exc:
        raise InvalidRequest(f"message source settings: {exc}") from None


def message_trust(settings: Settings) -> MessageTrust:
    mode = settings.message_auth
    if mode not in AUTH_MODES:
        raise InvalidRequest(f"message_auth must be one of {', '.join(AUTH_MODES)}, not {mode!r}")
    keys_file = settings.message_auth_keys_file
    if mode != "off" and not keys_file:
        raise InvalidRequest(f"message_auth: {mode} needs message_auth_keys_file")

    def keys() -> dict[str, bytes]:
        assert keys_file is not None
        return parse_keys(Path(keys_file).expanduser().read_text())

    return MessageTrust(
        policy=source_policy(settings),
        auth="hmac" if mode == "hmac" else "bearer" if mode == "bearer" else "off",
        keys=keys if keys_file else None,
        production_senders=frozenset(settings.message_production_senders),
    )


def message_credentials(settings: Settings) -> Callable[[], Credentials]:
    """The credentials a message's source may use: http tokens only for hosts that
    message_sources lists by name (never through ``*``); S3 and Rucio as configured (their
    buckets and scopes must be listed to be named at all)."""
    files = credential_files(settings)
    named = {
        entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        for entry in source_policy(settings).sources.hosts
        if "*" not in entry
    }

    def load() -> Credentials:
        loaded = files.load()
        tokens = {host: t for host, t in loaded.http_tokens.items() if host in named}
        return dataclasses.replace(loaded, http_tokens=tokens)

    return load


def quota_limits(settings: Settings) -> Limits:
    return Limits(
        per_user=settings.quota_per_user,
        per_group=dict(settings.quota_per_group),
        total=settings.quota_total,
        user_ttl=settings.quota_user_ttl,
    )
