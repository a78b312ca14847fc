"""Everything the app needs at run time, opened in order and closed in reverse.

``open_services(settings)`` checks the database once (migrations, master key, the secret key),
then starts the root supervisor ``livechat`` (web/supervision.py) with its children in order:
``storage`` (opens the database behind the ``StorageHandle`` everyone holds, and watches it),
``engine`` (the engine's own supervisor: registries, hub, ticker), ``housekeeping``,
``delivery`` (mail and webhooks) and, in a cluster, ``limits`` (the rate limits' sync with
Redis). It yields one ``Services`` object that ``create_app`` shares with every request and
WebSocket. Closing it stops the children in reverse (limits, delivery, housekeeping, the
engine within its deadline, and last storage, which commits what is queued and closes). A
child crashing past the root's restart intensity stops the server (``livechat serve`` exits
with an error, for the service manager to restart).

The webhook service mails the owners of a subscription it disables through the mailer
(web/webhook_notice.py), handed to it here as a callback so neither imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import current_app

from storage import (
    BlobStore,
    EncryptionError,
    GroupCommitConfig,
    LocalBlobStore,
    MasterKeyRing,
    S3BlobStore,
    Storage,
    StorageHandle,
    backend_of,
    default_files_dir,
    open_storage,
    resolve_master_keys,
)
from web.access import AccessEvents
from web.cluster import ClusterGateway, ClusterService, cluster_gateway, cluster_ownership
from web.costly import CostlyReads
from web.errors import ConfigError, Unavailable
from web.housekeeping import housekeeping_loop
from web.live_visitors import VisitorRollCall
from web.mail import Mailer
from web.metrics import WebMetrics
from web.oidc import OidcClient
from web.overload import OverloadGate
from web.passwords import PasswordHasher
from web.ratelimit import ConnectionCap, LoginThrottle, SharedLimits, SharedWindow, SlidingWindow
from web.settings import Settings
from web.sockets import SocketRegistry
from web.supervision import StorageChild, build_tree
from web.twofactor import FlowSigner
from web.webhook_notice import notify_disabled
from web.webhooks import WebhookService
from web.workspace_cache import WorkspaceCache

if TYPE_CHECKING:
    from engine import ChatEngine, EngineMetrics, Supervisor

log = logging.getLogger("livechat.supervision")
SERVICES_KEY = "LIVECHAT_SERVICES"
# How often the shared timer checks the sockets' deadlines and queues their pings: at most
# this, and at most a quarter of the ping interval (a ping is late by up to one tick).
WATCHDOG_TICK_S = 1.0
CREDENTIAL_RECHECK_TIMEOUT_S = 5.0  # one agent credential's storage re-check (sockets.py)


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
    # the windows per IP and per visitor, one budget across a cluster: synced with Redis in
    # batches when a bus is set (web/ratelimit.py; the tree's ``limits`` child runs the sync)
    shared_limits: SharedLimits = attrs.field(default=None)
    ip_messages: SharedWindow = attrs.field(default=None)
    ip_new_conversations: SharedWindow = attrs.field(default=None)
    connection_cap: ConnectionCap = attrs.field(default=None)
    profile_updates: SharedWindow = attrs.field(default=None)  # per visitor id
    uploads: SlidingWindow = attrs.field(default=None)  # files, per uploader
    overload: OverloadGate = attrs.field(default=None)
    mailer: Mailer = attrs.field(default=None)  # outgoing mail and the inbox scan (web/mail.py)
    draining: bool = False
    # two-factor login and single sign-on: login-step tokens, identity-provider calls
    flows: FlowSigner = attrs.field(default=None)
    oidc: OidcClient = attrs.field(default=None)
    webhooks: WebhookService | None = None  # set by open_services
    tree: Supervisor | None = None  # the root supervisor (None in tests that build their own)
    # connect/request/disconnect of sockets: the engine, or in a cluster the gateway that
    # forwards a socket to the node owning its workspace (web/cluster.py)
    gateway: ChatEngine | ClusterGateway = attrs.field(default=None)
    # a visitor upgrade's widget key and ban checks, from memory (web/workspace_cache.py)
    workspaces: WorkspaceCache = attrs.field(default=None)
    # credential and access changes: closes and cache drops, on every node (web/access.py)
    access: AccessEvents = attrs.field(default=None)
    # the visitors connected now, on every node (web/live_visitors.py)
    roll_call: VisitorRollCall = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        s = self.settings
        if self.gateway is None:
            self.gateway = self.engine
        cluster = self.gateway if isinstance(self.gateway, ClusterGateway) else None
        bus = cluster.bus if cluster is not None else None
        if self.costly is None:
            self.costly = CostlyReads.from_settings(s)
        if self.shared_limits is None:
            self.shared_limits = SharedLimits(bus)
        limits = self.shared_limits
        if self.login_throttle is None:
            self.login_throttle = LoginThrottle(
                free_failures=s.accounts.login_failures_per_account_backoff_after,
                max_backoff_s=s.accounts.login_backoff_max_s,
                ip_failures=s.accounts.login_failures_per_ip_per_15min,
                limits=limits,
                secret_key=self.secret_key,
            )
        if self.ip_messages is None:
            self.ip_messages = limits.window("ip_messages", s.rate_limits.ip_messages_per_10s, 10.0)
        if self.ip_new_conversations is None:
            self.ip_new_conversations = limits.window(
                "ip_new_conversations", s.rate_limits.new_conversations_per_hour, 3600.0
            )
        if self.profile_updates is None:
            self.profile_updates = limits.window(
                "profile_updates", s.rate_limits.profile_updates_per_min, 60.0
            )
        if self.uploads is None:
            self.uploads = SlidingWindow(s.files.uploads_per_10min, 600.0)
        if self.connection_cap is None:
            self.connection_cap = ConnectionCap(s.websocket.max_connections_per_ip)
        if self.overload is None:
            self.overload = OverloadGate.from_settings(s)
        if self.flows is None:
            self.flows = FlowSigner(self.secret_key)
        if self.oidc is None:
            self.oidc = OidcClient(timeout_s=s.sso.http_timeout_s, threads=s.sso.http_threads)
        if self.mailer is None:
            self.mailer = Mailer(settings=s, storage=self.storage)
        if self.workspaces is None:
            self.workspaces = WorkspaceCache(self.storage)
        if self.access is None:
            self.access = AccessEvents(self.sockets, self.engine, cluster, self.workspaces)
        if self.roll_call is None:
            self.roll_call = VisitorRollCall(self.sockets, cluster)


def current_services() -> Services:
    services: Services | None = current_app.config.get(SERVICES_KEY)
    if services is None:
        raise Unavailable("the server is starting", code="not_ready")
    return services


def blob_store(settings: Settings) -> BlobStore:
    """Where chat files' bytes go: the S3 bucket if one is set, else ``files_dir``."""
    if settings.files.s3_bucket:
        return S3BlobStore(
            bucket=settings.files.s3_bucket,
            endpoint_url=settings.files.s3_endpoint_url,
            region=settings.files.s3_region,
            access_key_id=settings.files.s3_access_key_id,
            secret_access_key=settings.files.s3_secret_access_key,
            prefix=settings.files.s3_prefix,
            timeout_s=settings.engine.storage_timeout_s,
        )
    backend, target = backend_of(settings.storage.database_url)
    return LocalBlobStore(settings.files.dir or default_files_dir(backend, target))


def storage_options(settings: Settings) -> dict[str, Any]:
    """Storage deadlines derived from ``storage_timeout_s``: the database gives up (lock wait on
    SQLite, connection wait on PostgreSQL) before the engine's deadline, so a sender's error is
    the database's answer and an abandoned attempt does not commit later; a commit stuck for
    half of it makes newcomers fail at once."""
    timeout_s = settings.engine.storage_timeout_s
    options: dict[str, Any] = {
        "group_commit": GroupCommitConfig(stalled_after_s=timeout_s / 2),
        "blobs": blob_store(settings),
    }
    backend, _ = backend_of(settings.storage.database_url)
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
            settings.storage.database_url,
            master_key=settings.security.master_key,
            master_key_file=settings.security.master_key_file,
            create=False,
        )
        if ring is None and backend_of(settings.storage.database_url)[0] == "sqlite":
            ring, path = resolve_master_keys(settings.storage.database_url, create=True)
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
    """Check storage and start the supervision tree; on exit stop the tree in reverse (the
    engine drains within ``engine_shutdown_deadline_s``; storage, the first child, closes last).

    On cancel the tree is cancelled after its deadline; storage is closed by its own context
    manager (bounded by its statement timeouts).
    """
    from engine import ChatEngine, EngineMetrics, TaskService

    ring = master_keys(settings)
    open_backend = partial(
        open_storage, settings.storage.database_url, keyring=ring, **storage_options(settings)
    )
    # A first, short open: migrations, the key checks and the secret, before anything serves.
    async with open_backend() as backend:
        try:
            # A wrong master key fails here, at start, not at the first message of a workspace.
            await backend.check_data_keys()
        except EncryptionError as err:
            raise ConfigError(f"master key: {err}") from err
        sealed = await backend.seal_plaintext()
        if sealed:
            log.warning("encrypted %d rows stored in plaintext before encryption", sealed)
        secret = settings.security.secret_key or await backend.get_or_create_secret(
            "web.secret_key"
        )
    handle = StorageHandle(backend_of(settings.storage.database_url)[0])
    storage = handle.storage  # what everyone holds; the tree's storage child fills it
    hasher = PasswordHasher(
        settings.accounts.password_hash_threads, queue=settings.accounts.password_hash_queue
    )
    engine_metrics = EngineMetrics()
    ownership = cluster_ownership(settings, storage)  # None: one process
    fence = ownership.fence if ownership is not None else None
    engine = ChatEngine(storage, settings.engine, metrics=engine_metrics, fence=fence)
    # a cluster: the bus, lease renewal and forwarding to the owner of each workspace
    gateway = cluster_gateway(engine, ownership, settings) if ownership is not None else None
    # the windows per IP and per visitor: one budget across the cluster, synced over the bus
    shared_limits = SharedLimits(gateway.bus if gateway is not None else None)
    mailer = Mailer(settings=settings, storage=storage)
    # a disabled subscription is mailed to the owners through the mail outbox
    webhooks = WebhookService(storage, settings, on_disabled=partial(notify_disabled, mailer))
    root = build_tree(
        storage=StorageChild(handle, open_backend),
        cluster=ClusterService(gateway) if gateway is not None else None,
        limits=shared_limits if gateway is not None else None,
        engine=engine,
        housekeeping=TaskService(
            "housekeeping",
            partial(
                housekeeping_loop,
                storage,
                settings.server.housekeeping_interval_s,
                settings.files.unsent_ttl_s,
            ),
        ),
        mail=TaskService("mail", mailer.serve),
        webhooks=TaskService("webhooks", webhooks.serve),
        max_restarts=settings.server.supervisor_max_restarts,
        period_s=settings.server.supervisor_period_s,
        metrics=engine_metrics,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.serve)
        services = Services(
            settings=settings,
            storage=storage,
            engine=engine,
            hasher=hasher,
            secret_key=secret,
            engine_metrics=engine_metrics,
            mailer=mailer,
            webhooks=webhooks,
            tree=root,
            gateway=gateway or engine,
            shared_limits=shared_limits,
        )
        tick_s = min(WATCHDOG_TICK_S, settings.websocket.ping_interval_s / 4)
        nursery.start_soon(services.sockets.watch, tick_s, services.overload)
        nursery.start_soon(
            partial(
                services.sockets.recheck_credentials,
                settings.websocket.ping_interval_s,
                timeout_s=CREDENTIAL_RECHECK_TIMEOUT_S,
            )
        )
        try:
            yield services
        finally:
            deadline_s = settings.engine.shutdown_deadline_s + settings.engine.storage_timeout_s + 1
            with trio.CancelScope(shield=True):
                await root.shutdown(deadline_s)
            nursery.cancel_scope.cancel()
