"""Everything the app needs at run time, opened in order and closed in reverse.

``open_services(settings)`` opens storage, loads (or creates once) the secret key and starts
the root supervisor ``livechat`` (rest_for_one) with its children in order: ``storage`` (a
watch over the database handle), ``engine`` (the engine's own supervisor: registries, hub,
ticker) and ``housekeeping``. It yields one ``Services`` object that ``create_app`` shares
with every request and WebSocket. Closing it stops the children in reverse (the engine drains
within its deadline), then closes storage. A child crashing past the root's restart intensity
stops the server (``livechat serve`` exits with an error, for the service manager to restart).

The database handle itself is opened before the tree and closed after it: its connections
and group committer must outlive every actor that writes through them.

Mail (web/mail.py) and webhooks (web/webhooks.py) are services of their own, started after
the tree in the same nursery; each handles its own failures and retries. The webhook service
mails the owners of a subscription it disables through the mailer (web/webhook_notice.py),
handed to it here as a callback so neither imports the other.
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
    backend_of,
    default_files_dir,
    open_storage,
    resolve_master_keys,
)
from web.cluster import ClusterGateway, cluster_ownership, serve_gateway
from web.costly import CostlyReads
from web.errors import ConfigError, Unavailable
from web.housekeeping import housekeeping_loop
from web.mail import Mailer
from web.metrics import WebMetrics
from web.oidc import OidcClient
from web.overload import OverloadGate
from web.passwords import PasswordHasher
from web.ratelimit import ConnectionCap, LoginThrottle, SlidingWindow
from web.settings import Settings
from web.sockets import SocketRegistry
from web.twofactor import FlowSigner
from web.webhook_notice import notify_disabled
from web.webhooks import WebhookService, serve_webhooks

if TYPE_CHECKING:
    from engine import ChatEngine, EngineMetrics, Supervisor, TreeNode

log = logging.getLogger("livechat.supervision")
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
        if self.uploads is None:
            self.uploads = SlidingWindow(s.files_uploads_per_10min, 600.0)
        if self.connection_cap is None:
            self.connection_cap = ConnectionCap(s.ws_max_connections_per_ip)
        if self.overload is None:
            self.overload = OverloadGate.from_settings(s)
        if self.flows is None:
            self.flows = FlowSigner(self.secret_key)
        if self.oidc is None:
            self.oidc = OidcClient(timeout_s=s.sso_http_timeout_s, threads=s.sso_http_threads)
        if self.mailer is None:
            self.mailer = Mailer(settings=s, storage=self.storage)
        if self.gateway is None:
            self.gateway = self.engine


def current_services() -> Services:
    services: Services | None = current_app.config.get(SERVICES_KEY)
    if services is None:
        raise Unavailable("the server is starting", code="not_ready")
    return services


def blob_store(settings: Settings) -> BlobStore:
    """Where chat files' bytes go: the S3 bucket if one is set, else ``files_dir``."""
    if settings.files_s3_bucket:
        return S3BlobStore(
            bucket=settings.files_s3_bucket,
            endpoint_url=settings.files_s3_endpoint_url,
            region=settings.files_s3_region,
            access_key_id=settings.files_s3_access_key_id,
            secret_access_key=settings.files_s3_secret_access_key,
            prefix=settings.files_s3_prefix,
            timeout_s=settings.storage_timeout_s,
        )
    backend, target = backend_of(settings.database_url)
    return LocalBlobStore(settings.files_dir or default_files_dir(backend, target))


def storage_options(settings: Settings) -> dict[str, Any]:
    """Storage deadlines derived from ``storage_timeout_s``: the database gives up (lock wait on
    SQLite, connection wait on PostgreSQL) before the engine's deadline, so a sender's error is
    the database's answer and an abandoned attempt does not commit later; a commit stuck for
    half of it makes newcomers fail at once."""
    timeout_s = settings.storage_timeout_s
    options: dict[str, Any] = {
        "group_commit": GroupCommitConfig(stalled_after_s=timeout_s / 2),
        "blobs": blob_store(settings),
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
STORAGE_WATCH_INTERVAL_S = 10.0  # how often the storage child checks the database can commit
STORAGE_WATCH_TIMEOUT_S = 5.0


class StorageWatch:
    """The root's ``storage`` child: checks every ``STORAGE_WATCH_INTERVAL_S`` that the
    database can commit (``Storage.check_ready``), logs each change, and shows the result in
    the supervision tree. Never raises: a database outage is reported, not restarted."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.status = "ready"
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._done = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                task_status.started()
                while True:
                    await trio.sleep(STORAGE_WATCH_INTERVAL_S)
                    await self.check()
        finally:
            self._scope = None
            self._done.set()

    async def check(self) -> None:
        try:
            with trio.fail_after(STORAGE_WATCH_TIMEOUT_S):
                await self._storage.check_ready()
            status = "ready"
        except Exception as err:  # a probe reports any failure, it never raises
            status = f"not_ready:{type(err).__name__}"
        if status != self.status:
            log.warning("storage: %s (was %s)", status, self.status)
            self.status = status

    async def drain(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    def snapshot(self, restart: str | None = None) -> TreeNode:
        from engine import TreeNode

        return TreeNode(name="storage", kind="service", restart=restart, state=self.status)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open storage and start the supervision tree; on exit stop the tree (the engine drains
    within ``engine_shutdown_deadline_s``), then close storage.

    On cancel the tree is cancelled after its deadline; storage is closed by its own context
    manager (bounded by its statement timeouts).
    """
    from engine import (
        ChatEngine,
        EngineConfig,
        EngineMetrics,
        RestartStrategy,
        RestartType,
        ServiceSpec,
        Supervisor,
        TaskService,
    )

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
            restart_max=settings.actor_max_restarts,
            restart_period_s=settings.actor_period_s,
            engine_restart_max=settings.engine_max_restarts,
            engine_restart_period_s=settings.engine_period_s,
            shutdown_deadline_s=settings.engine_shutdown_deadline_s,
            disconnect_grace_s=settings.agent_reconnect_grace_s,
            agent_auto_away_after_s=settings.agent_auto_away_after_s,
        )
        engine_metrics = EngineMetrics()
        ownership = cluster_ownership(settings, storage)  # None: one process
        fence = ownership.fence if ownership is not None else None
        engine = ChatEngine(storage, config, metrics=engine_metrics, fence=fence)
        root = Supervisor(
            RestartStrategy.REST_FOR_ONE,
            settings.supervisor_max_restarts,
            settings.supervisor_period_s,
            name="livechat",
            metrics=engine_metrics,
            children=[
                ServiceSpec("storage", StorageWatch(storage)),
                # transient: a crash restarts it; its normal return is a deliberate shutdown
                ServiceSpec("engine", engine, RestartType.TRANSIENT),
                ServiceSpec(
                    "housekeeping",
                    TaskService(
                        "housekeeping",
                        partial(
                            housekeeping_loop,
                            storage,
                            settings.housekeeping_interval_s,
                            settings.files_unsent_ttl_s,
                        ),
                    ),
                ),
            ],
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
                tree=root,
            )
            if ownership is not None:
                services.gateway = await nursery.start(
                    serve_gateway, engine, ownership, settings
                )
            nursery.start_soon(services.sockets.watch, WATCHDOG_TICK_S, services.overload)
            await nursery.start(services.mailer.serve)
            # a disabled subscription is mailed to the owners through the mail outbox
            services.webhooks = await nursery.start(
                partial(serve_webhooks, on_disabled=partial(notify_disabled, services.mailer)),
                storage,
                settings,
            )
            try:
                yield services
            finally:
                deadline_s = settings.engine_shutdown_deadline_s + settings.storage_timeout_s + 1
                with trio.CancelScope(shield=True):
                    await root.shutdown(deadline_s)
                if ownership is not None:  # the engine committed what it accepted: hand over
                    await ownership.release_all()  # (before the bus stops: no gap for clients)
                nursery.cancel_scope.cancel()
