"""``livechat migrate``, ``backup``, ``restore``, ``export``, ``audit`` and ``keys``, with the
server's configuration.

The commands themselves live in ``storage.commands``; this module gives them the server's
database options and loads the settings (database URL, file store) the way ``serve`` does, so
storage never imports the web layer.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from storage import commands, resolve_master_keys
from web.cli import add_database_options, settings_from_args
from web.errors import ConfigError
from web.services import blob_store

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the storage subcommands to the ``livechat`` parser."""
    commands.register(subparsers, add_database_options=add_database_options, configure=_configure)


def _configure(args: argparse.Namespace) -> str | None:
    try:
        settings = settings_from_args(
            args,
            database_url=args.database_url,
            master_key_file=getattr(args, "master_key_file", None),
            files_dir=args.files_dir,
        )
    except ConfigError as err:
        print(f"livechat: error: {err}", file=sys.stderr)
        return None
    # Encryption at rest: every command opens the database with the server's master key.
    args.settings_key = settings.security.master_key
    args.keyring, args.key_file = resolve_master_keys(
        settings.storage.database_url,
        master_key=settings.security.master_key,
        master_key_file=settings.security.master_key_file,
    )
    args.blobs = blob_store(settings)  # the server's file store, for every command
    return settings.storage.database_url
