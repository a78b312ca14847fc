"""Everything the app needs at run time, opened in order and closed in reverse.

``open_services(settings)`` opens storage, loads (or creates once) the secret key, starts the
engine and the housekeeping task in a nursery it owns, and yields one ``Services`` object that
``create_app`` shares with every request and WebSocket. Closing it shuts the engine down
within its deadline, then closes storage. Start-up order: storage → secret → engine →
housekeeping; shutdown in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import current_app

from storage import (
    EncryptionError,
    GroupCommitConfig,
    MasterKeyRing,
    Storage,
    backend_of,
    open_storage,
    resolve_master_keys,
)
from web.costly import CostlyReads
from web.errors import ConfigError, Unavailable
from web.housekeeping import serve_housekeeping
from web.metrics import WebMetrics
from web.passwords import PasswordHasher
from web.ratelimit import ConnectionCap, LoginThrottle, SlidingWindow
from web.settings import Settings
from web.sockets import SocketRegistry

if TYPE_CHECKING:
    from engine.api import ChatEngine
    from engine.metrics import EngineMetrics

log = logging.getLogger("livechat.services")
SERVICES_KEY = "LIVECHAT_SERVICES"
WATCHDOG_TICK_S = 1.0  # how often the shared timer checks every socket's deadlines


@attrs.define(eq=False)
class Services:
    settings: Settings
    storage: Storage
    engine: ChatEngine
    hasher: PasswordHasher
    secret_key: str
    engine_metrics: EngineMetrics
    metrics: WebMetrics = attrs.field(factory=WebMetrics)
    sockets: SocketRegistry = attrs.field(factory=SocketRegistry)
    costly: CostlyReads = attrs.field(default=None)  # exports and searches
    login_throttle: LoginThrottle = attrs.field(default=None)
    ip_messages: SlidingWindow = attrs.field(default=None)
    ip_new_conversations: SlidingWindow = attrs.field(default=None)
    connection_cap: ConnectionCap = attrs.field(default=None)
    profile_updates: SlidingWindow = attrs.field(default=None)  # per visitor id
    draining: bool = False

    def __attrs_post_init__(self) -> None:
        s = self.settings
        if self.costly is None:
            self.costly = CostlyReads.from_settings(s)
        if self.login_throttle is None:
            self.login_throttle = LoginThrottle(
                free_failures=s.login_failures_per_account_backoff_after,
                max_backoff_s=s.login_backoff_max_s,
                ip_failures=s.login_failures_per_ip_per_15min,
            )
        if self.ip_messages is None:
            self.ip_messages = SlidingWindow(s.rate_ip_messages_per_10s, 10.0)
        if self.ip_new_conversations is None:
            self.ip_new_conversations = SlidingWindow(s.rate_new_conversations_per_hour, 3600.0)
        if self.profile_updates is None:
            self.profile_updates = SlidingWindow(s.rate_profile_updates_per_min, 60.0)
        if self.connection_cap is None:
            self.connection_cap = ConnectionCap(s.ws_max_connections_per_ip)


def current_services() -> Services:
    services: Services | None = current_app.config.get(SERVICES_KEY)
    if services is None:
        raise Unavailable("the server is starting", code="not_ready")
    return services


def storage_options(settings: Settings) -> dict[str, Any]:
    """Storage deadlines derived from ``storage_timeout_s``: the database gives up (lock wait on
    SQLite, connection wait on PostgreSQL) before the engine's deadline, so a sender's error is
    the database's answer and an abandoned attempt does not commit later; a commit stuck for
    half of it makes newcomers fail at once."""
    timeout_s = settings.storage_timeout_s
    options: dict[str, Any] = {
        "group_commit": GroupCommitConfig(stalled_after_s=timeout_s / 2),
    }
    backend, _ = backend_of(settings.database_url)
    if backend == "sqlite":
        options["busy_timeout_s"] = timeout_s * 0.75
    else:
        options["connect_timeout_s"] = timeout_s * 0.75
    return options


def master_keys(settings: Settings) -> MasterKeyRing:
    """The master key ring from the settings; on SQLite without one, the key file next to the
    database (generated at first start, 0600, and its place logged: back it up separately)."""
    try:
        ring, path = resolve_master_keys(
            settings.database_url,
            master_key=settings.master_key,
            master_key_file=settings.master_key_file,
            create=False,
        )
        if ring is None and backend_of(settings.database_url)[0] == "sqlite":
            ring, path = resolve_master_keys(settings.database_url, create=True)
            log.warning(
                "generated the master key for encryption at rest in %s: back it up separately"
                " from the database (without it the data cannot be read)",
                path,
            )
    except EncryptionError as err:
        raise ConfigError(f"master key: {err}") from err
    if ring is None:
        raise ConfigError(
            "PostgreSQL needs a master key for encryption at rest: set master_key"
            " (LIVECHAT_MASTER_KEY, base64 of 32 random bytes) or master_key_file"
        )
    return ring


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open storage and start the engine; on exit drain the engine, then close storage.

    On cancel the engine nursery is cancelled after ``engine_shutdown_deadline_s``; storage is
    closed by its own context manager (bounded by its statement timeouts).
    """
    from engine.api import ChatEngine, EngineConfig
    from engine.metrics import EngineMetrics

    ring = master_keys(settings)
    async with open_storage(
        settings.database_url, keyring=ring, **storage_options(settings)
    ) as storage:
        try:
            # A wrong master key fails here, at start, not at the first message of a workspace.
            await storage.check_data_keys()
        except EncryptionError as err:
            raise ConfigError(f"master key: {err}") from err
        sealed = await storage.seal_plaintext()
        if sealed:
            log.warning("encrypted %d rows stored in plaintext before encryption", sealed)
        secret = settings.secret_key or await storage.get_or_create_secret("web.secret_key")
        hasher = PasswordHasher(settings.password_hash_threads, queue=settings.password_hash_queue)
        config = EngineConfig(
            outbox_size=settings.ws_outbox_size,
            message_rate_per_s=settings.rate_visitor_messages_per_s,
            message_burst=settings.rate_visitor_message_burst,
            storage_timeout_s=settings.storage_timeout_s,
        )
        async with trio.open_nursery() as nursery:
            engine_metrics = EngineMetrics()
            engine = ChatEngine(storage, config, metrics=engine_metrics)
            await nursery.start(engine.serve)
            await nursery.start(serve_housekeeping, storage, settings.housekeeping_interval_s)
            services = Services(
                settings=settings,
                storage=storage,
                engine=engine,
                hasher=hasher,
                secret_key=secret,
                engine_metrics=engine_metrics,
            )
            nursery.start_soon(services.sockets.watch, WATCHDOG_TICK_S)
            try:
                yield services
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(settings.engine_shutdown_deadline_s + 1):
                        await engine.shutdown(deadline_s=settings.engine_shutdown_deadline_s)
                nursery.cancel_scope.cancel()
