"""The command line: the only place that reads the environment and configures logging."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from batchd.client import register as register_client_commands
from batchd.clock import SystemClock
from batchd.errors import ConfigurationError, StoreError
from batchd.heap import tune_collector
from batchd.keys import KeyNotFound, Keys
from batchd.logs import configure as configure_logging
from batchd.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.table import Table

    from batchd.models import ManagedKey
    from batchd.store import SqlStore

T = TypeVar("T")

EXIT_WORKER_FAILED = 70
"""The exit code once a worker task kept failing (EX_SOFTWARE): systemd or Kubernetes restart."""


def _settings(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config, **flags)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc


_STORE = [
    click.option(
        "--config",
        type=click.Path(path_type=Path),
        envvar="BATCHD_CONFIG",
        help="A TOML config file (default: ./batchd.toml when present).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        help="Where the SQLite database and file blobs live.",
    ),
    click.option("--database-url", help="sqlite:///PATH or postgresql://…"),
]
_COMMON = [
    *_STORE,
    click.option(
        "--blob-url", help="Where file bytes live: s3://BUCKET/PREFIX (default: DATA_DIR/files)."
    ),
    click.option(
        "--upstream",
        "upstreams",
        multiple=True,
        help="An OpenAI-compatible base URL, optionally MODEL[,MODEL]@URL. Repeatable.",
    ),
    click.option("--upstream-api-key", help="The bearer key sent to upstreams."),
    click.option("--max-concurrency", type=int, help="Requests in flight per upstream."),
    click.option(
        "--completion-windows", help="Comma-separated windows a batch may ask for, e.g. 24h,7d."
    ),
    click.option("--log-level", help="debug, info, warning or error."),
]


def common_options(func: Any) -> Any:
    for option in reversed(_COMMON):
        func = option(func)
    return func


def _windows(text: str | None) -> list[str] | None:
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


@click.group()
@click.version_option(package_name="batchd")
def main() -> None:
    """batchd: the OpenAI Batch API, self-hosted."""


@main.command()
@common_options
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="An accepted API key, KEY or PROJECT:KEY. Repeatable. With none here, in "
    "--api-keys-file or made by `batchd keys create`, any key is accepted.",
)
@click.option(
    "--api-keys-file",
    type=click.Path(path_type=Path),
    help="A file of accepted keys, PROJECT:KEY (or KEY) a line; # comments and blanks allowed.",
)
@click.option(
    "--no-worker", is_flag=True, default=False, help="Serve the API only; run no batches."
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    default=None,
    help="With no --api-key, serve on a non-loopback --host anyway: anyone who reaches it can "
    "use it.",
)
def serve(
    config: Path | None, completion_windows: str | None, no_worker: bool, **flags: Any
) -> None:
    """Serve the API and run batches in one process."""
    import uvicorn

    from batchd.app import create_app

    settings = _settings(
        config,
        completion_windows=_windows(completion_windows),
        run_worker=False if no_worker else None,
        **flags,
    )
    if settings.open_to_anyone and not asyncio.run(_stored_keys(settings)):
        raise click.UsageError(
            f"No API key is configured or stored and --host {settings.host} is not a loopback "
            "address: an API other machines can reach needs keys (without any, it would refuse "
            "every caller). Give --api-key or --api-keys-file (or BATCHD_API_KEYS), make one "
            "with `batchd keys create`, or give --insecure-no-auth to serve it to anyone who "
            "reaches it."
        )
    configure_logging(settings.log_level, settings.log_format)
    server: uvicorn.Server | None = None

    def stop() -> None:
        assert server is not None
        server.should_exit = True

    app = create_app(settings, on_fatal=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,  # uvicorn's own lines go through batchd's handler and format
            timeout_graceful_shutdown=15,
        )
    )
    tune_collector()
    server.run()
    if app.state.fatal is not None:
        sys.exit(EXIT_WORKER_FAILED)


@main.command()
@common_options
def worker(config: Path | None, completion_windows: str | None, **flags: Any) -> None:
    """Run batches without serving the API."""
    settings = _settings(config, completion_windows=_windows(completion_windows), **flags)
    configure_logging(settings.log_level, settings.log_format)
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        fatal = runner.run(_run_worker(settings))
    if fatal:
        sys.exit(EXIT_WORKER_FAILED)


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (with uvicorn[standard], as ``serve`` uses it):
    the worker spends most of its CPU in the loop and the HTTP client it drives."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run_worker(settings: Settings) -> bool:
    """Run a worker until SIGTERM or SIGINT, or until one of its tasks keeps failing (then
    True)."""
    from batchd.app import SHUTDOWN_GRACE
    from batchd.blobstore import open_blobstore
    from batchd.store import open_store
    from batchd.upstreams import build_upstreams
    from batchd.worker import Worker

    store = await open_store(settings.resolved_database_url)
    blobs = open_blobstore(settings.resolved_blob_url)
    await blobs.check()
    router = build_upstreams(settings)
    await router.open()
    stop = asyncio.Event()
    failed: list[str] = []

    def fatal(task: str) -> None:
        failed.append(task)
        stop.set()

    engine = Worker(settings, store, blobs, router, on_fatal=fatal)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await engine.start()
        tune_collector()
        await stop.wait()
        await engine.stop(SHUTDOWN_GRACE)
    finally:
        await router.close()
        await store.close()
    return bool(failed)


def store_options(func: Any) -> Any:
    """The settings that say where the store is, for commands that use nothing else."""
    for option in reversed(_STORE):
        func = option(func)
    return func


async def _open_store(settings: Settings, *, migrate: bool = True) -> SqlStore:
    from batchd.store import open_store

    try:
        return await open_store(settings.resolved_database_url, migrate=migrate)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


async def _stored_keys(settings: Settings) -> int:
    store = await _open_store(settings)
    try:
        return await store.keys.count_active()
    finally:
        await store.close()


@main.command()
@store_options
def migrate(config: Path | None, **flags: Any) -> None:
    """Apply database migrations and exit."""
    settings = _settings(config, **flags)

    async def run() -> int:
        store = await _open_store(settings, migrate=False)
        try:
            return await store.db.migrate()
        finally:
            await store.close()

    click.echo(f"schema version {asyncio.run(run())}")


@main.group()
def keys() -> None:
    """Manage the API keys kept in the store (hashed: a key is shown once, when made)."""


def _with_keys(settings: Settings, use: Callable[[Keys], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await _open_store(settings)
        try:
            return await use(Keys(store.keys, SystemClock()))
        except KeyNotFound as exc:
            raise click.ClickException(exc.message) from exc
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        finally:
            await store.close()

    return asyncio.run(run())


@keys.command("create")
@store_options
@click.option("--project", required=True, help="The project the key gives access to.")
@click.option("--name", help="A note to tell the key apart, e.g. who holds it.")
def keys_create(config: Path | None, project: str, name: str | None, **flags: Any) -> None:
    """Make a key and print it (only now: the store keeps its hash)."""
    made = _with_keys(_settings(config, **flags), lambda k: k.create(project, name))
    click.echo(
        f"Created {made.record.id} ({made.record.prefix}…) for project {project}. "
        "Keep the key now: it is not shown again.",
        err=True,
    )
    click.echo(made.secret)


@keys.command("ls")
@store_options
@click.option("--project", help="Only this project's keys.")
def keys_ls(config: Path | None, project: str | None, **flags: Any) -> None:
    """List keys by id and prefix (never the keys themselves), revoked ones too."""
    from batchd.client.output import console

    found = _with_keys(_settings(config, **flags), lambda k: k.list(project))
    console().print(_key_table(found))


def _key_table(keys: list[ManagedKey]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from batchd.client.render import when

    table = Table(expand=False)
    for column in ("id", "project", "name", "prefix", "created", "revoked"):
        table.add_column(column, no_wrap=column != "name")
    for key in keys:
        table.add_row(
            key.id,
            Text(key.project),
            Text(key.name or "-"),
            f"{key.prefix}…",
            when(key.created_at),
            when(key.revoked_at),
        )
    return table


@keys.command("revoke")
@store_options
@click.argument("key")
def keys_revoke(config: Path | None, key: str, **flags: Any) -> None:
    """Revoke KEY (its id, its prefix as `keys ls` shows it, or the key itself): every API
    process refuses it from the next request."""
    revoked = _with_keys(_settings(config, **flags), lambda k: k.revoke(key))
    click.echo(f"Revoked {revoked.id} ({revoked.prefix}…) of project {revoked.project}.")


register_client_commands(main)
