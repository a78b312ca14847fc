"""The ``livechat`` command: one entry point, one subcommand per operator task.

Each package contributes its subcommands through a ``register(subparsers)`` function in its
``commands`` module; a subcommand's parser sets ``handler`` (``(args) -> int`` exit status).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import trio

from web.errors import ConfigError
from web.settings import Settings, load_settings


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (also LIVECHAT_CONFIG)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="settings",
        help="any setting (docs/configuration.md), e.g. engine.idle_timeout_s=600; repeatable",
    )
    parser.add_argument(
        "--database-url", help="sqlite:///path or postgresql://... (LIVECHAT_DATABASE_URL)"
    )
    parser.add_argument(
        "--master-key-file",
        help="file holding the master key for encryption at rest (LIVECHAT_MASTER_KEY_FILE;"
        " default on SQLite: <database>.master-key)",
    )
    parser.add_argument(
        "--files-dir",
        help="where chat files are stored (LIVECHAT_FILES_DIR; default: beside the SQLite db)",
    )


def flag_overrides(args: argparse.Namespace, named: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line: the named flags and ``--set`` items (a
    ``--set`` of the same key wins). Raises ``ConfigError`` for an item without ``=``."""
    overrides: dict[str, Any] = {}
    for item in args.settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[name.strip()] = value
    overrides.update({name: value for name, value in named.items() if value is not None})
    return overrides


def settings_from_args(args: argparse.Namespace, **named: Any) -> Settings:
    """Load the settings with this command's flags on top (see ``web.settings``)."""
    return load_settings(flag_overrides(args, named), config_file=args.config)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(
            args,
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            master_key_file=args.master_key_file,
            files_dir=args.files_dir,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            allowed_origins=args.allowed_origins,
            secret_key=args.secret_key,
            public_url=args.public_url,
            demo=args.demo,
            workers=args.workers,
            bus_url=args.bus_url,
            node_id=args.node_id,
        )
    except ConfigError as err:
        print(f"livechat: error: {err}", file=sys.stderr)
        return 2
    if settings.cluster.workers > 1 and args.worker_fd is None:
        from web.workers import run_workers

        return run_workers(settings, args.argv)
    from web.server import run_server

    refused: list[str] = []
    try:
        trio.run(
            partial(
                run_server,
                settings,
                listen_fd=args.worker_fd,
                ready_fd=args.ready_fd,
                parent_fd=args.parent_fd,
            )
        )
    except* ConfigError as group:  # found at start (a wrong or missing master key)
        refused.extend(str(err) for err in group.exceptions)
    if refused:
        print(f"livechat: error: {refused[0]}", file=sys.stderr)
        return 2
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from web.settings_docs import render_toml

    try:
        settings = settings_from_args(
            args,
            database_url=args.database_url,
            master_key_file=args.master_key_file,
            files_dir=args.files_dir,
        )
    except ConfigError as err:
        print(f"livechat: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render_toml(settings))
    return 0


def _config_docs(_args: argparse.Namespace) -> int:
    from web.settings_docs import render_docs

    sys.stdout.write(render_docs())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livechat",
        description="Self-hostable live chat engine for customer support.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the chat server (widget, console, admin API)")
    add_database_options(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--tls-cert", help="PEM certificate; serve HTTPS/WSS with --tls-key")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--allowed-origins", help="comma-separated extra origins for the widget")
    serve.add_argument("--secret-key", help="secret for signing tokens (LIVECHAT_SECRET_KEY)")
    serve.add_argument("--public-url", help="URL users reach the server at, behind a proxy")
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on first start, seed a demo workspace and agent (default on; LIVECHAT_DEMO)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes on this host under one parent that restarts a dead one"
        " (default 1; above 1 needs PostgreSQL and --bus-url; LIVECHAT_WORKERS)",
    )
    serve.add_argument(
        "--bus-url",
        help="Redis between the processes and hosts of a cluster, redis://host:6379/0"
        " (LIVECHAT_BUS_URL)",
    )
    serve.add_argument(
        "--node-id", help="this node's name in leases and logs (default: generated, logged)"
    )
    # set by the --workers parent on the processes it starts (web/workers.py)
    serve.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    config = sub.add_parser("config", help="the settings: effective values, documentation")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser(
        "show", help="print the effective settings as TOML (secrets redacted)"
    )
    add_database_options(show)
    show.set_defaults(handler=_config_show)
    docs = config_sub.add_parser("docs", help="print docs/configuration.md (every key)")
    docs.set_defaults(handler=_config_docs)

    for module_name in (
        "web.storage_commands",
        "bench.commands",
        "web.admin_commands",
        "web.cluster_commands",
    ):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the --workers parent repeats it
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
