"""``idds-vis``: run the agent, manage visualizations, serve one UI, or run the demo."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from datetime import timedelta
from pathlib import Path

import click

from idds_vis.agent.health import add_running_checks, health_of
from idds_vis.agent.service import Agent
from idds_vis.cli.common import (
    DURATION,
    emit_json,
    instances_table,
    ledger_session,
    make_settings,
    run,
    settings_from,
    setup_logging,
    stderr,
)
from idds_vis.cli.web import serve_web_alone, start_web
from idds_vis.deploy.kubernetes.settings import KubeSettings
from idds_vis.domain.models import DEFAULT_TOOL, Instance, InstanceKey, VisRequest
from idds_vis.domain.phases import TERMINAL, Phase
from idds_vis.runtime.wiring import build_agent, build_intake, credential_files


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "IDDS_VIS"}
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
    settings = make_settings(config, state_dir, database_url)
    ctx.obj = {"settings": settings, "verbose": verbose}
    setup_logging(verbose, secrets=settings.secrets())


@cli.command()
@click.pass_context
def agent(ctx: click.Context) -> None:
    """Run the agent: pipeline workers, reaper and reconciler, until SIGTERM or Ctrl-C."""
    settings = settings_from(ctx)
    setup_logging(ctx.obj["verbose"], secrets=settings.secrets(), log_format=settings.log_format)

    async def main() -> None:
        service = build_agent(settings)
        intake = build_intake(settings, service)
        # Everything built so far lives as long as the process: keep it out of the collector's
        # scans (reconcile of 10,000 UIs: ~1.9 s CPU -> ~1.2 s, tests/bench/bench_kube.py).
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        add_running_checks(health_of(service), service, intake[0] if intake else None)
        intake_task = None
        if intake is not None:
            source, consumer = intake
            await source.start()
            intake_task = asyncio.create_task(consumer.run())
            await source.wait_connected()  # subscribed: from now on nothing sent is missed
        web_app = await start_web(settings, service)  # None unless web_port is set
        stderr.print(f"agent running; ledger {settings.db_url}")
        await stop.wait()
        if web_app is not None:
            await web_app.stop()
        if intake is not None and intake_task is not None:
            intake_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await intake_task
            await intake[0].stop()
        await service.stop()
        await service.ledger.close()

    run(main)


@cli.command()
@click.option("--host", help="Address to listen on (default: web_host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: web_port, else 8080).")
@click.option("--public-url", help="The app's public base URL behind a proxy (default: web_url).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None, public_url: str | None) -> None:
    """Serve the web app alone (permalink pages, the monitor's JSON) over the agent's ledger."""
    settings = settings_from(ctx).replace(web_host=host, web_port=port, web_url=public_url)
    run(lambda: serve_web_alone(settings))


task_option = click.option(
    "--task", "task_id", required=True, help="Task id (PanDA jediTaskID or any id)."
)
tool_option = click.option(
    "--tool", default=DEFAULT_TOOL, show_default=True, help="Visualization tool."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


async def _wait_for(
    service: Agent, key: InstanceKey, phases: set[Phase], timeout: float
) -> Instance:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        inst: Instance | None = await service.ledger.get(key)
        if inst is not None and inst.phase in phases:
            return inst
        if loop.time() > deadline:
            phase = inst.phase.value if inst else "missing"
            raise click.ClickException(
                f"still {phase} after {timeout:.0f} s: is an agent running on this ledger?"
            )
        await asyncio.sleep(0.5)


def _show(inst: Instance, as_json: bool) -> None:
    if as_json:
        emit_json(inst.as_json())
    else:
        stderr.print(instances_table([inst]))


@cli.command()
@task_option
@tool_option
@click.option(
    "--source",
    required=True,
    help="Artefacts: a directory, an archive, an http(s) URL of one, "
    "s3://bucket/key-or-prefix or rucio://scope:name.",
)
@click.option(
    "--ttl",
    type=DURATION,
    default=None,
    help="Lifetime once ready, e.g. 24h, 90m (default from config).",
)
@click.option("--wait/--no-wait", default=False, help="Wait until the UI is ready or failed.")
@click.option(
    "--timeout", type=DURATION, default="10m", show_default=True, help="How long --wait waits."
)
@json_option
@click.pass_context
def request(ctx: click.Context, task_id: str, tool: str, source: str, ttl: timedelta | None,
            wait: bool, timeout: timedelta, as_json: bool) -> None:  # fmt: skip
    """Ask for a UI (idempotent: asking again for the same task and tool changes nothing)."""
    settings = settings_from(ctx)

    async def main() -> None:
        async with ledger_session(settings) as service:
            req = VisRequest(task_id=task_id, tool=tool, source=source,
                             ttl=ttl or settings.default_ttl, origin="cli")  # fmt: skip
            inst, created = await service.submit(req)
            if not created and not as_json:
                stderr.print(f"{inst.name} already has a record ({inst.phase.value}); nothing new")
            if wait:
                inst = await _wait_for(service, req.key, {Phase.READY, *TERMINAL},
                                       timeout.total_seconds())  # fmt: skip
            _show(inst, as_json)
            if inst.phase is Phase.FAILED:
                raise SystemExit(1)

    run(main)


@cli.command(name="list")
@click.option("--phase", "phases", multiple=True, type=click.Choice([p.value for p in Phase]),
              help="Only these phases (repeatable).")  # fmt: skip
@json_option
@click.pass_context
def list_(ctx: click.Context, phases: tuple[str, ...], as_json: bool) -> None:
    """List visualizations and their phases."""
    settings = settings_from(ctx)

    async def main() -> None:
        async with ledger_session(settings) as service:
            wanted = [Phase(p) for p in phases] or None
            instances = await service.ledger.list(wanted)
        if as_json:
            emit_json([inst.as_json() for inst in instances])
        else:
            stderr.print(instances_table(instances))

    run(main)


@cli.command()
@task_option
@tool_option
@click.option("--by", type=DURATION, required=True, help="How much longer, e.g. 2h.")
@json_option
@click.pass_context
def extend(ctx: click.Context, task_id: str, tool: str, by: timedelta, as_json: bool) -> None:
    """Move a live UI's expiry later."""
    settings = settings_from(ctx)

    async def main() -> None:
        async with ledger_session(settings) as service:
            _show(await service.extend(InstanceKey(task_id, tool), by), as_json)

    run(main)


backend_option = click.option(
    "--backend", type=click.Choice(["agent", "kubernetes"]), default="agent", show_default=True,
    help="agent: through the agent's ledger; kubernetes: straight to the cluster.",
)  # fmt: skip
kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig file (default: in-cluster credentials).",
)
namespace_option = click.option("--namespace", default="default", show_default=True)


@cli.command()
@task_option
@tool_option
@backend_option
@kubeconfig_option
@namespace_option
@click.option("--wait/--no-wait", default=True, help="Wait until it is gone.")
@click.option("--timeout", type=DURATION, default="2m", show_default=True)
@json_option
@click.pass_context
def teardown(ctx: click.Context, task_id: str, tool: str, backend: str, kubeconfig: str | None,
             namespace: str, wait: bool, timeout: timedelta, as_json: bool) -> None:  # fmt: skip
    """End a UI now. With the agent its expiry becomes now and the reaper removes it; with
    ``--backend kubernetes`` its objects are deleted and the command returns once they are gone."""
    settings = settings_from(ctx)
    if backend == "kubernetes":
        from idds_vis.cli import kube

        ks = KubeSettings(namespace=namespace)
        emit_json(run(lambda: kube.teardown(ks, kubeconfig, task_id, timeout.total_seconds())))
        return

    async def main() -> None:
        async with ledger_session(settings) as service:
            key = InstanceKey(task_id, tool)
            inst = await service.teardown(key)
            if wait:
                inst = await _wait_for(service, key, set(TERMINAL), timeout.total_seconds())
            _show(inst, as_json)

    run(main)


@cli.command()
@task_option
@click.option(
    "--source",
    required=True,
    help="Artefacts the UI stages: an http(s) URL of an archive, s3://bucket/key-or-prefix "
    "or rucio://scope:name (credentials from --config go into a Secret).",
)
@click.option(
    "--backend", type=click.Choice(["kubernetes"]), default="kubernetes", show_default=True
)
@kubeconfig_option
@namespace_option
@click.option("--image", default=KubeSettings.image, show_default=True, help="The UI image.")
@click.option("--public-host", default=KubeSettings.public_host, show_default=True)
@click.option("--ttl", type=DURATION, default="24h", show_default=True)
@click.option("--wait/--no-wait", default=True, help="Wait until the UI's pod is ready.")
@click.option("--timeout", type=DURATION, default="3m", show_default=True)
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
@click.option("--port", type=int, required=True)
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
@click.option("--max-bytes", type=int, default=2 * 1024**3, show_default=True)
@click.option("--max-files", type=int, default=20_000, show_default=True)
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
    try:
        serve(source=source, staged_dir=staged, prefix=prefix, host=host, port=port,
              allowed_hosts=allowed_hosts, cors_origins=cors_origins, workdir=workdir,
              max_bytes=max_bytes, max_files=max_files, guard=guard)  # fmt: skip
    except VisError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from exc


@cli.command()
@click.option(
    "--ttl", type=DURATION, default="10m", show_default=True, help="Lifetime of the demo UI."
)
@json_option
@click.pass_context
def demo(ctx: click.Context, ttl: timedelta, as_json: bool) -> None:
    """Train a tiny model, stage its artefacts, and bring up its UI through the real pipeline."""
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
