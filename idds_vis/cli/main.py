"""``idds-vis``: run the agent, manage visualizations, serve one UI, or run the demo."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import click

from idds_vis.agent.actor import acting_as
from idds_vis.agent.quotas import QuotaQueue
from idds_vis.agent.service import Agent
from idds_vis.cli import exits
from idds_vis.cli.checks import SOURCE, TASK_ID, TASK_NAME
from idds_vis.cli.common import (
    DURATION,
    emit_json,
    ledger_session,
    make_settings,
    note,
    print_instances,
    run,
    settings_from,
    setup_logging,
)
from idds_vis.cli.web import cannot_listen, run_service, serve_agent, serve_web_alone
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.errors import InvalidRequest, NotFound
from idds_vis.domain.expiry import format_duration
from idds_vis.domain.identity import Identity
from idds_vis.domain.models import DEFAULT_TOOL, TOOLS, Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.domain.quotas import Limits
from idds_vis.ports.ledger import AccessLedger
from idds_vis.runtime.config import SettingsError
from idds_vis.runtime.logs import fail
from idds_vis.runtime.wiring import credential_files

_HELP = "idds_vis.asks_for_help"


class _Commands(click.Group):
    """Notes whether the sub-command's own arguments ask for its help (Click prints it once the
    sub-command parses them, after the group's callback has read the settings)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_HELP] = any(arg in ctx.help_option_names for arg in rest)
        return name, command, rest


@click.group(
    cls=_Commands,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "auto_envvar_prefix": "IDDS_VIS",
        "show_default": True,
    },
    epilog=exits.epilog(),
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="IDDS_VIS_CONFIG",
    help="YAML settings file.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="IDDS_VIS_STATE_DIR",
    help="Where the ledger (SQLite default), staged data and UI logs live.",
)
@click.option(
    "--database-url",
    envvar="IDDS_VIS_DATABASE_URL",
    help="Ledger URL, e.g. postgresql+asyncpg://user@host/db (default: SQLite in the state dir).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
# The installed distribution's version (what `pip install` put there, not the checkout's).
@click.version_option(package_name="idds-vis", prog_name="idds-vis")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, state_dir: Path | None,
        database_url: str | None, verbose: bool) -> None:  # fmt: skip
    """Dedicated, read-only MLflow UIs for finished PanDA/iDDS training tasks."""
    try:  # a bad settings file or value: one line naming the setting, exit 2 (issue 19)
        settings = make_settings(config, state_dir, database_url)
    except SettingsError as exc:
        if ctx.meta.get(_HELP):
            return  # `<cmd> --help` needs no settings: help works with a broken config
        if ctx.invoked_subcommand in ("agent", "web") and exc.log_format != "text":
            setup_logging(verbose, log_format="json")  # their logs' default: JSON lines
        fail(str(exc), 2)
    ctx.obj = {"settings": settings, "verbose": verbose}
    setup_logging(verbose, secrets=settings.secrets())


@cli.command()
@click.pass_context
def agent(ctx: click.Context) -> None:
    """Run the agent: pipeline workers, reaper and reconciler, until SIGTERM or Ctrl-C."""
    settings = settings_from(ctx)
    setup_logging(ctx.obj["verbose"], secrets=settings.secrets(), log_format=settings.log_format)
    run_service(lambda: serve_agent(settings))


@cli.command()
@click.option("--host", help="Address to listen on (default: web_host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: web_port, else 8080).")
@click.option("--public-url", help="The app's public base URL behind a proxy (default: web_url).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None, public_url: str | None) -> None:
    """Serve the web app alone (permalink pages, the monitor's JSON) over the agent's ledger."""
    settings = settings_from(ctx)
    setup_logging(ctx.obj["verbose"], secrets=settings.secrets(), log_format=settings.log_format)
    try:
        settings = settings.replace(web_host=host, web_port=port, web_url=public_url)
    except SettingsError as exc:
        fail(str(exc), 2)
    run_service(lambda: serve_web_alone(settings))


task_option = click.option(
    "--task", "task_id", type=TASK_ID, required=True, help="Task id (PanDA jediTaskID or any id)."
)
tool_option = click.option(
    "--tool",
    type=click.Choice(sorted(TOOLS)),
    default=DEFAULT_TOOL,
    show_default=True,
    help="Visualization tool.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (else a table; TSV in a pipe)."
)
wait_option = click.option(
    "--wait/--no-wait", default=False, help="Wait until the UI is ready or failed."
)
timeout_option = click.option(
    "--timeout", type=DURATION, default="10m", show_default=True, help="How long --wait waits."
)
claim_wait_option = click.option(
    "--claim-wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for an agent to pick the request up before saying that none has "
    "(0: look once).",
)
POLL = 0.2  # seconds between looks at the ledger while a command waits


def _what(key: InstanceKey) -> str:
    return f"task {key.task_id} ({key.tool})"


def _ended(inst: Instance) -> str:
    return inst.phase.value + (f": {inst.reason}" if inst.reason else "")


async def _wait_for(
    service: Agent, key: InstanceKey, phases: set[Phase], timeout: float,
    known: Phase | None = None,
) -> Instance:  # fmt: skip
    """Until the record reaches one of ``phases``; each step it takes after ``known`` (the
    phase the command last saw) is one line on stderr, stdout staying the result: a wait of
    minutes on a big archive shows where it is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    shown = known
    while True:
        inst: Instance | None = await service.ledger.get(key)
        if inst is not None and inst.phase in phases:
            return inst
        if inst is not None and inst.phase is not shown:
            if shown is not None:
                note(f"{_what(key)}: {inst.phase.value}…")
            shown = inst.phase
        if loop.time() > deadline:
            phase = inst.phase.value if inst else "missing"
            raise exits.TimedOut(
                f"still {phase} after {timeout:.0f} s: is an agent running on this ledger?"
            )
        await asyncio.sleep(POLL)


async def _await_claim(service: Agent, inst: Instance, seconds: float) -> Instance:
    """Up to ``seconds`` for an agent to take the request (it leaves ``requested``); if none
    does, say so: not an error, the request stays and any agent started later takes it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    announced = False
    while inst.phase is Phase.REQUESTED:
        if loop.time() >= deadline:
            note(
                f"no agent has picked {_what(inst.key)} up yet; is `idds-vis agent` running on "
                "this ledger? (the request stays recorded and starts once one runs)"
            )
            break
        if not announced:
            note(f"waiting up to {seconds:g} s for an agent to pick {_what(inst.key)} up…")
            announced = True
        await asyncio.sleep(min(POLL, max(deadline - loop.time(), 0)))
        inst = await service.ledger.get(inst.key) or inst
    return inst


async def _after_start(
    service: Agent, inst: Instance, claim_wait: float, wait: bool, timeout: timedelta
) -> Instance:
    inst = await _await_claim(service, inst, claim_wait)
    if wait:
        inst = await _wait_for(service, inst.key, {Phase.READY, *TERMINAL},
                               timeout.total_seconds(), known=inst.phase)  # fmt: skip
    return inst


def _show(inst: Instance, as_json: bool) -> None:
    print_instances([inst], as_json, one=True)


SOURCE_HELP = (
    "a directory or an archive (a relative path is made absolute here and must exist), "
    "an http(s) URL of one, s3://bucket/key-or-prefix or rucio://scope:name."
)


@cli.command(epilog=exits.epilog())
@task_option
@tool_option
@click.option("--source", type=SOURCE, required=True, help="Artefacts: " + SOURCE_HELP)
@click.option(
    "--task-name",
    type=TASK_NAME,
    help="The task's name (PanDA taskName), stored with the record: the permalink "
    "/t/<task name>/<tool> then finds this UI.",
)
@click.option(
    "--ttl",
    type=DURATION,
    default=None,
    help="Lifetime once ready, e.g. 24h, 90m (default: the default_ttl setting, 24h).",
)
@wait_option
@timeout_option
@claim_wait_option
@json_option
@click.pass_context
def request(ctx: click.Context, task_id: str, tool: str, source: str, task_name: str | None,
            ttl: timedelta | None, wait: bool, timeout: timedelta, claim_wait: float,
            as_json: bool) -> None:  # fmt: skip
    """Ask for a UI. Idempotent: asking again for a live one changes nothing (exit 0); a record
    that ended (failed or expired) is started again only by `idds-vis relaunch` (exit 1)."""
    settings = settings_from(ctx)

    async def main() -> int:
        async with ledger_session(settings) as service:
            req = VisRequest(task_id=task_id, tool=tool, source=source, task_name=task_name,
                             ttl=ttl or settings.default_ttl, origin="cli")  # fmt: skip
            inst, created = await service.submit(req)
            if not created:
                if task_name is not None and inst.task_name is None:
                    inst = await service.ledger.name_task(inst.key, task_name)
                elif task_name is not None and inst.task_name != task_name:
                    note(f"the record keeps its task name {inst.task_name!r}")
                if inst.phase in TERMINAL or inst.phase is Phase.EXPIRING:
                    _show(inst, as_json)
                    ended = (
                        "is being torn down (expiring)"
                        if inst.phase is Phase.EXPIRING
                        else f"already has a record that ended ({_ended(inst)})"
                    )
                    note(f"{_what(req.key)} {ended}; nothing new: `idds-vis relaunch --task "
                         f"{task_id} --tool {tool}` starts it again (--source and --ttl may "
                         "change)")  # fmt: skip
                    return exits.FAILED
                note(f"{_what(req.key)} already has a live record ({inst.phase.value}); "
                     "nothing new")  # fmt: skip
                if inst.source != source:
                    note("it keeps its own source; --source was not used")
            inst = await _after_start(service, inst, claim_wait, wait, timeout)
            _show(inst, as_json)
            return exits.FAILED if inst.phase is Phase.FAILED else exits.OK

    raise SystemExit(run(main))


@cli.command(epilog=exits.epilog())
@task_option
@tool_option
@click.option(
    "--source", type=SOURCE, help="New artefacts (default: the record's own): " + SOURCE_HELP
)
@click.option(
    "--ttl", type=DURATION, default=None, help="New lifetime once ready (default: the record's)."
)
@wait_option
@timeout_option
@claim_wait_option
@json_option
@click.pass_context
def relaunch(ctx: click.Context, task_id: str, tool: str, source: str | None,
             ttl: timedelta | None, wait: bool, timeout: timedelta, claim_wait: float,
             as_json: bool) -> None:  # fmt: skip
    """Start a failed or expired UI again (attempt + 1, a new URL), as the web page's Relaunch
    button does. The record keeps its origin and task name; a live UI is left as it is (exit 0)."""
    settings = settings_from(ctx)

    async def main() -> int:
        async with ledger_session(settings) as service:
            key = InstanceKey(task_id, tool)
            inst = await service.ledger.get(key)
            if inst is None:
                raise NotFound(f"no visualization for {_what(key)}: `idds-vis request` asks "
                               "for one")  # fmt: skip
            if inst.phase is Phase.EXPIRING:  # going away: relaunch it once it is gone
                note(f"{_what(key)} is being torn down; waiting up to "
                     f"{format_duration(timeout)} (--timeout) for that to finish…")  # fmt: skip
                inst = await _wait_for(service, key, set(TERMINAL), timeout.total_seconds())
            if inst.phase not in TERMINAL:
                _show(inst, as_json)
                note(f"{_what(key)} is {inst.phase.value}: nothing to relaunch")
                return exits.OK
            if source is None and ttl is None:
                # The permalink page's relaunch (api/routes/permalink.py): the same record,
                # attempt + 1, a new path.
                with acting_as(CLI_USER):
                    inst = await service.relaunch(key)
            else:
                inst = await _relaunch_with(service, inst, source, ttl)
            inst = await _after_start(service, inst, claim_wait, wait, timeout)
            _show(inst, as_json)
            return exits.FAILED if inst.phase is Phase.FAILED else exits.OK

    raise SystemExit(run(main))


# Who a relaunch from the command line is requested by (as a web relaunch is by the person who
# clicks): exempt from the catalog's quotas, like `request`, which goes straight to the agent.
CLI_USER = "cli"
CLI_IDENTITY = Identity(user=CLI_USER, subject=CLI_USER, production=True)


async def _relaunch_with(
    service: Agent, inst: Instance, source: str | None, ttl: timedelta | None
) -> Instance:
    """The catalog's relaunch (api/catalog/guard.py), which takes a new lifetime and source:
    the quota queue's start moves the ended record back to requested with them. The origin
    stays, so a source a broker message named is still staged as one."""
    ledger = service.ledger
    assert isinstance(ledger, AccessLedger)  # the SQL ledger the commands open
    queue = QuotaQueue(service, ledger, Limits())
    again = VisRequest(inst.task_id, source=source or inst.source, tool=inst.tool,
                       ttl=ttl or inst.ttl, origin=inst.origin, requested_by=CLI_USER,
                       task_name=inst.task_name)  # fmt: skip
    admission = await queue.request(again, CLI_IDENTITY, None)
    if admission.instance is None or not admission.started:
        raise InvalidRequest(f"{_what(inst.key)} was not relaunched: it changed meanwhile "
                             "(another relaunch?); `idds-vis list` shows it")  # fmt: skip
    return admission.instance


@cli.command(name="list", epilog=exits.epilog())
@click.option("--phase", "phases", multiple=True, type=click.Choice([p.value for p in Phase]),
              help="Only these phases (repeatable).")  # fmt: skip
@click.option("--task", "tasks", multiple=True, metavar="TASK_ID",
              help="Only these tasks (repeatable).")  # fmt: skip
@json_option
@click.pass_context
def list_(ctx: click.Context, phases: tuple[str, ...], tasks: tuple[str, ...],
          as_json: bool) -> None:  # fmt: skip
    """List visualizations and their phases: a table on a terminal (URLs whole, never cut),
    tab-separated lines with a header in a pipe, JSON with --json."""
    settings = settings_from(ctx)

    async def main() -> None:
        async with ledger_session(settings) as service:
            wanted = [Phase(p) for p in phases] or None
            instances = await service.ledger.list(wanted)
        if tasks:
            wanted_tasks = set(tasks)
            instances = [i for i in instances if i.task_id in wanted_tasks]
        print_instances(instances, as_json)

    run(main)


@cli.command(epilog=exits.epilog())
@task_option
@tool_option
@click.option(
    "--by",
    type=DURATION,
    required=True,
    help="How much longer, e.g. 2h. A UI's remaining lifetime may be at most the max_ttl "
    "setting (7d unless configured).",
)
@json_option
@click.pass_context
def extend(ctx: click.Context, task_id: str, tool: str, by: timedelta, as_json: bool) -> None:
    """Move a live UI's expiry later."""
    settings = settings_from(ctx)

    async def main() -> None:
        async with ledger_session(settings) as service:
            key = InstanceKey(task_id, tool)
            inst = await service.ledger.get(key)
            if inst is None:
                raise NotFound(f"no visualization for {_what(key)}")
            if inst.phase in TERMINAL:
                raise InvalidRequest(
                    f"{_what(key)} has ended ({_ended(inst)}): only a live UI can be extended; "
                    f"`idds-vis relaunch --task {task_id} --tool {tool} --ttl …` starts it again"
                )
            if inst.expires_at is None:
                raise InvalidRequest(
                    f"{_what(key)} is not ready yet ({inst.phase.value}): its lifetime (the "
                    "--ttl it was asked with) starts once it is ready; extend it then"
                )
            _check_room(inst, by, service.max_ttl, service.clock.now())
            _show(await service.extend(key, by), as_json)

    run(main)


def _check_room(inst: Instance, by: timedelta, maximum: timedelta | None, now: datetime) -> None:
    """Refuse, naming the maximum and what is left of it, an extension past ``max_ttl``."""
    if maximum is None or inst.expires_at is None:
        return
    room = now + maximum - max(inst.expires_at, now)
    if by <= room:
        return
    most = format_duration(timedelta(seconds=int(room.total_seconds()) // 60 * 60))
    can = f"can be extended by at most {most}" if room >= timedelta(minutes=1) else (
        "cannot be extended any further")  # fmt: skip
    raise InvalidRequest(
        f"the maximum lifetime is {format_duration(maximum)} from now (max_ttl): "
        f"{_what(inst.key)} {can}, not by {format_duration(by)}"
    )


backend_option = click.option(
    "--backend", type=click.Choice(["agent", "kubernetes"]), default="agent", show_default=True,
    help="agent: through the agent's ledger; kubernetes: straight to the cluster.",
)  # fmt: skip
kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig file (default: in-cluster credentials).",
)
namespace_option = click.option(
    "--namespace", default="default", show_default=True, help="The cluster namespace of the UI."
)


@cli.command(epilog=exits.epilog())
@task_option
@tool_option
@backend_option
@kubeconfig_option
@namespace_option
@click.option("--wait/--no-wait", default=True, help="Wait until it is gone.")
@click.option(
    "--timeout", type=DURATION, default="2m", show_default=True, help="How long --wait waits."
)
@json_option
@click.pass_context
def teardown(ctx: click.Context, task_id: str, tool: str, backend: str, kubeconfig: str | None,
             namespace: str, wait: bool, timeout: timedelta, as_json: bool) -> None:  # fmt: skip
    """End a UI now. With the agent its expiry becomes now and the reaper removes it (one that
    already ended is left as it is, exit 0); with `--backend kubernetes` its objects are deleted
    and the command returns once they are gone."""
    settings = settings_from(ctx)
    if backend == "kubernetes":
        from idds_vis.cli import kube

        ks = KubeSettings(namespace=namespace)
        emit_json(run(lambda: kube.teardown(ks, kubeconfig, task_id, timeout.total_seconds())))
        return

    async def main() -> int:
        async with ledger_session(settings) as service:
            key = InstanceKey(task_id, tool)
            inst = await service.teardown(key)
            if inst.phase in TERMINAL:  # it had ended before: nothing runs, nothing to stop
                _show(inst, as_json)
                note(f"{_what(key)} already ended ({_ended(inst)}): nothing to stop; `idds-vis "
                     f"relaunch --task {task_id} --tool {tool}` starts it again")  # fmt: skip
                return exits.OK
            if wait:
                inst = await _wait_for(service, key, set(TERMINAL), timeout.total_seconds())
            _show(inst, as_json)
            return exits.FAILED if inst.phase is Phase.FAILED else exits.OK

    raise SystemExit(run(main))


@cli.command()
@task_option
@click.option(
    "--source",
    required=True,
    help="Artefacts the UI stages: an http(s) URL of an archive, s3://bucket/key-or-prefix "
    "or rucio://scope:name (credentials from --config go into a Secret).",
)
@click.option(
    "--backend",
    type=click.Choice(["kubernetes"]),
    default="kubernetes",
    show_default=True,
    help="Where the UI runs (only kubernetes: the agent's own UIs come from `request`).",
)
@kubeconfig_option
@namespace_option
@click.option("--image", default=KubeSettings.image, show_default=True, help="The UI image.")
@click.option(
    "--public-host",
    default=KubeSettings.public_host,
    show_default=True,
    help="The host name the UI is reached by (its Ingress or Route).",
)
@click.option("--ttl", type=DURATION, default="24h", show_default=True, help="Lifetime.")
@click.option("--wait/--no-wait", default=True, help="Wait until the UI's pod is ready.")
@click.option(
    "--timeout", type=DURATION, default="3m", show_default=True, help="How long --wait waits."
)
@click.pass_context
def deploy(
    ctx: click.Context,
    task_id: str,
    source: str,
    backend: str,
    kubeconfig: str | None,
    namespace: str,
    image: str,
    public_host: str,
    ttl: timedelta,
    wait: bool,
    timeout: timedelta,
) -> None:
    """Create one UI's objects in a cluster and print their kinds and names as JSON."""
    from idds_vis.cli import kube

    ks = KubeSettings(namespace=namespace, image=image, public_host=public_host)
    credentials = credential_files(settings_from(ctx))  # from --config, read at use
    emit_json(run(lambda: kube.deploy(ks, kubeconfig, task_id, source, ttl, wait,
                                      timeout.total_seconds(),
                                      lambda src: credentials.load().pod_env(src))))  # fmt: skip


@cli.command(name="serve-ui")
@click.option(
    "--source",
    help="Artefacts to stage: a directory, an archive, an http(s) URL of one, "
    "s3://bucket/key-or-prefix or rucio://scope:name.",
)
@click.option(
    "--staged",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A directory the agent already staged (serve in place).",
)
@click.option("--prefix", required=True, help="URL path prefix, e.g. /vis/mlflow-123-abcdef12.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port to bind.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Public host name(s) the UI is reached by (repeatable).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Origin(s) of the public URL, e.g. https://vis.example.org (repeatable).",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Private directory for staged data (default: a new temporary one).",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=2 * 1024**3,
    show_default=True,
    help="Most bytes the staged artefacts may hold.",
)
@click.option(
    "--max-files",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Most files the staged artefacts may hold.",
)
@click.option(
    "--guard-addresses",
    is_flag=True,
    help="The source came from a broker message: reach no loopback, private or link-local "
    "address unless --allow-private-address lists it.",
)
@click.option(
    "--allow-private-address",
    "allow_private",
    multiple=True,
    help="With --guard-addresses: a CIDR, address or host name staging may still reach "
    "(repeatable; the agent's allow_private_addresses).",
)
def serve_ui(source: str | None, staged: Path | None, prefix: str, host: str, port: int,
             allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...], workdir: Path | None,
             max_bytes: int, max_files: int, guard_addresses: bool,
             allow_private: tuple[str, ...]) -> None:  # fmt: skip
    """Stage artefacts, make them read-only, and exec the MLflow server on them."""
    if (source is None) == (staged is None):
        raise click.UsageError("give exactly one of --source and --staged")
    from idds_vis.domain.errors import VisError
    from idds_vis.domain.source_policy import AddressPolicy, PolicyError
    from idds_vis.ui.serve import serve_ui as serve

    try:
        guard = AddressPolicy.from_setting(allow_private) if guard_addresses else None
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-private-address") from None
    if (refused := cannot_listen(host, port)) is not None:  # at once, not after staging
        note(f"error: {refused}")
        raise SystemExit(exits.FAILED)
    try:
        serve(source=source, staged_dir=staged, prefix=prefix, host=host, port=port,
              allowed_hosts=allowed_hosts, cors_origins=cors_origins, workdir=workdir,
              max_bytes=max_bytes, max_files=max_files, guard=guard)  # fmt: skip
    except VisError as exc:  # the artefacts could not be staged or served: a failure, not usage
        note(f"error: {exc}")
        raise SystemExit(exits.FAILED) from exc


@cli.command()
@click.option(
    "--ttl", type=DURATION, default="10m", show_default=True, help="Lifetime of the demo UI."
)
@click.option("--json", "as_json", is_flag=True, help="Print each phase as a JSON line.")
@click.pass_context
def demo(ctx: click.Context, ttl: timedelta, as_json: bool) -> None:
    """Train a tiny model, stage its artefacts, and bring up its UI through the real pipeline
    (exit 0 once it has expired, 1 if it failed, 130 on Ctrl-C)."""
    from idds_vis.cli.demo import run_demo

    raise SystemExit(
        run_demo(
            settings_from(ctx),
            ttl,
            as_json,
            explicit_state=ctx.find_root().params.get("state_dir") is not None,
        )
    )


def main() -> None:
    cli(prog_name="idds-vis")
