"""The ``livechat`` command: one entry point, one subcommand per operator task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from web.errors import ConfigError
from web.settings import load_settings


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (also LIVECHAT_CONFIG)")
    parser.add_argument(
        "--database-url", help="sqlite:///path or postgresql://... (LIVECHAT_DATABASE_URL)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livechat",
        description="Self-hostable live chat engine for customer support.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the chat server (widget, console, admin API)")
    _add_server_options(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--tls-cert", help="PEM certificate; serve HTTPS/WSS with --tls-key")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--allowed-origins", help="comma-separated extra origins for the widget")
    serve.add_argument("--secret-key", help="secret for signing tokens (LIVECHAT_SECRET_KEY)")
    serve.add_argument("--public-url", help="URL users reach the server at, behind a proxy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            {key: value for key, value in vars(args).items() if key not in {"command", "config"}},
            config_file=args.config,
        )
    except ConfigError as err:
        print(f"livechat: error: {err}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from web.server import run_server

        trio.run(run_server, settings)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
