"""The sections of the process settings: one frozen attrs class per concern.

Each field documents itself (``metadata["doc"]``) and states its range (``min``/``max``,
``min_exclusive``, ``choices``); ``secret`` fields are redacted by ``livechat config show``.
``legacy`` names the flat setting it replaced (``ws_outbox_size``...), still accepted as a
config-file key, a ``LIVECHAT_*`` variable and a ``load_settings`` override. Without it the flat
name is the section's ``LEGACY_PREFIX`` plus the key. The engine's section is
``engine.EngineConfig`` itself (see ``web.settings``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

__all__ = [
    "AccountSettings",
    "ClusterSettings",
    "FileSettings",
    "MailSettings",
    "OverloadSettings",
    "RateLimitSettings",
    "SecuritySettings",
    "ServerSettings",
    "SsoSettings",
    "StorageSettings",
    "WebSocketSettings",
    "WebhookSettings",
]


def knob(
    default: Any,
    doc: str,
    *,
    legacy: str | None = None,
    secret: bool = False,
    min: float | None = 0,
    max: float | None = None,
    min_exclusive: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """One setting: its default, documentation and valid range."""
    metadata: dict[str, Any] = {"doc": doc, "min": min, "max": max}
    if legacy is not None:
        metadata["legacy"] = legacy
    if secret:
        metadata["secret"] = True
    if min_exclusive:
        metadata["min_exclusive"] = True
    if choices is not None:
        metadata["choices"] = choices
    return attrs.field(default=default, metadata=metadata, repr=not secret)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@attrs.frozen(kw_only=True)
class ServerSettings:
    """The HTTP server, its process and the supervision tree's root."""

    LEGACY_PREFIX: ClassVar[str] = ""

    host: str = knob("127.0.0.1", "Address to bind.")
    port: int = knob(8000, "Port to bind.", min=1, max=65535)
    public_url: str | None = knob(
        None, "URL users reach the server at, behind a proxy (default: from host and port)."
    )
    tls_cert: str | None = knob(None, "PEM certificate: serve HTTPS/WSS (with tls_key).")
    tls_key: str | None = knob(None, "PEM private key of tls_cert.")
    allowed_origins: tuple[str, ...] = knob(
        (), "Extra origins the widget may be embedded on, for every workspace (comma-separated)."
    )
    trust_proxy_headers: bool = knob(
        False, "Take the client IP from X-Forwarded-For (only behind a proxy that sets it)."
    )
    demo: bool = knob(True, "On first start, seed a demo workspace and agent.")
    log_level: str = knob("info", "Logging level.", choices=LOG_LEVELS)
    shutdown_grace_s: float = knob(
        10.0, "On shutdown, connections get this long to close before they are cut."
    )
    read_timeout_s: float = knob(
        30.0,
        "A stalled HTTP read is cut after this (raised above the WebSocket dead-peer timeout, "
        "so live sockets are ours to close). 0: off.",
    )
    http_header_timeout_s: float = knob(
        5.0,
        "A connection must complete its request headers within this (also the keep-alive idle "
        "timeout between requests, and the TLS handshake deadline).",
        min_exclusive=True,
    )
    http_max_body_bytes: int = knob(1024 * 1024, "Largest HTTP request body.", min=1)
    gc_gen0_threshold: int = knob(
        50_000,
        "Python's cyclic GC: a young-generation collection after this many net allocations "
        "(Python's default is 700); start-up objects are frozen out. 0: leave the GC alone.",
    )
    housekeeping_interval_s: float = knob(
        3600.0, "Purge terminated workspaces and apply retention this often.", min_exclusive=True
    )
    supervisor_max_restarts: int = knob(
        1, "Root supervisor: restarts of its children within supervisor_period_s, else exit 1."
    )
    supervisor_period_s: float = knob(
        60.0, "The window of supervisor_max_restarts.", min_exclusive=True
    )
    debug_fault_injection: bool = knob(
        False,
        "Operators only, off in production: POST /api/v1/ops/faults crashes one actor on "
        "purpose (to check restarts and alerting on a staging server).",
    )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self.host}:{self.port}"


@attrs.frozen(kw_only=True)
class WebSocketSettings:
    """The WebSocket protocol (docs/protocol.md); the outbox size is ``engine.outbox_size``."""

    LEGACY_PREFIX: ClassVar[str] = "ws_"

    max_message_bytes: int = knob(64 * 1024, "Larger frames get a frame_too_large error.", min=1)
    hard_max_message_bytes: int = knob(
        1024 * 1024, "Larger frames close the socket with 1009.", min=1
    )
    auth_timeout_s: float = knob(
        10.0, "The first frame (hello/auth) must arrive within this.", min_exclusive=True
    )
    ping_interval_s: float = knob(
        20.0, 'The server sends {"type":"ping"} this often.', min_exclusive=True
    )
    dead_peer_timeout_s: float = knob(
        0.0,
        "No frame at all from the peer for this long: close with 4001. 0: two missed pings, "
        "2 x ping_interval_s plus a slack.",
    )
    outbox_max_size: int = knob(
        8192,
        "Hard cap of a connection's outbox: a connection this far behind is dropped (1013). "
        "At least engine.outbox_size.",
        min=1,
    )
    slow_consumer_grace_s: float = knob(
        10.0, "Backed up with no socket write for this long: close with 1013."
    )
    max_connections_per_ip: int = knob(50, "Open WebSocket connections per client IP.", min=1)
    max_sockets_per_agent: int = knob(
        8, "Live console sockets per account; more: an error and close 4002.", min=1
    )
    rate_limited_close_after_s: float = knob(
        10.0,
        "A client whose rate-limited requests keep coming before the retry_after_s it was given, "
        "for this long: close with 1008.",
    )

    @property
    def effective_dead_peer_timeout_s(self) -> float:
        """Silence after which a socket is dead: ``dead_peer_timeout_s``, or by default two
        missed pings plus a slack for a pong delayed by a busy client or network."""
        if self.dead_peer_timeout_s > 0:
            return self.dead_peer_timeout_s
        return 2 * self.ping_interval_s + min(5.0, self.ping_interval_s / 2)


@attrs.frozen(kw_only=True)
class OverloadSettings:
    """Overload policy (docs/protocol.md, "Overload"): push back on senders, keep receivers."""

    LEGACY_PREFIX: ClassVar[str] = "overload_"

    loop_lag_s: float = knob(0.5, "Event-loop lag that means the process is behind (0: off).")
    backed_up_fraction: float = knob(
        0.01, "Fraction of sockets backed up but draining that means behind too.", max=1
    )
    retry_after_s: float = knob(
        1.0, "Told to senders while shedding (jittered +-50 %).", min_exclusive=True
    )


@attrs.frozen(kw_only=True)
class RateLimitSettings:
    """Sliding-window rate limits; the per-visitor token bucket is ``engine.message_*``."""

    LEGACY_PREFIX: ClassVar[str] = "rate_"

    frames_per_10s: int = knob(200, "Frames per connection, every frame.")
    messages_per_10s: int = knob(20, "Messages per connection.")
    typing_per_10s: int = knob(20, "Typing signals per connection.")
    ip_messages_per_10s: int = knob(200, "Messages per client IP, all its connections.")
    new_conversations_per_hour: int = knob(10, "New conversations per client IP.")
    profile_updates_per_min: int = knob(
        10, "Profile updates per visitor (update_profile), all its connections."
    )
    exports_per_hour: int = knob(10, "Exports and backups of one workspace.")
    searches_per_min: int = knob(60, "Full-text searches of one workspace.")
    export_max_concurrent: int = knob(
        2,
        "Exports streaming at once, server-wide; more: 429 exports_busy.",
        legacy="export_max_concurrent",
        min=1,
    )


@attrs.frozen(kw_only=True)
class AccountSettings:
    """Sessions, logins and password hashing (docs/security.md)."""

    LEGACY_PREFIX: ClassVar[str] = ""

    session_idle_timeout_s: float = knob(8 * 3600.0, "A session unused this long ends.")
    session_absolute_timeout_s: float = knob(7 * 24 * 3600.0, "A session ends after this.")
    login_failures_per_ip_per_15min: int = knob(30, "Failed logins per client IP.")
    login_failures_per_account_backoff_after: int = knob(
        3, "Failed logins of one account before it backs off (1 s, 2 s, 4 s ... capped)."
    )
    login_backoff_max_s: float = knob(300.0, "Cap of the per-account login backoff.")
    login_second_factor_ttl_s: float = knob(
        300.0, "Password accepted: the two-factor code must follow within this."
    )
    password_hash_threads: int = knob(2, "Password hashing threads.", min=1)
    password_hash_queue: int = knob(
        8, "Logins and password changes waiting for a hashing thread; more: 503 at once."
    )
    password_reset_ttl_s: float = knob(3600.0, "A password reset link works once, within this.")
    invitation_ttl_s: float = knob(7 * 24 * 3600.0, "A new agent's set-password link lasts this.")


@attrs.frozen(kw_only=True)
class SsoSettings:
    """Single sign-on with OpenID Connect (docs/security.md)."""

    LEGACY_PREFIX: ClassVar[str] = "sso_"

    http_timeout_s: float = knob(
        10.0,
        "Each call to an identity provider (discovery, token, keys).",
        min_exclusive=True,
    )
    http_threads: int = knob(4, "Identity-provider calls at once (worker threads).", min=1)
    allow_http_loopback: bool = knob(
        False, "OpenID Connect issuers over plain http, only on loopback (tests)."
    )


@attrs.frozen(kw_only=True)
class SecuritySettings:
    """Secrets: token signing and encryption at rest (docs/security.md)."""

    LEGACY_PREFIX: ClassVar[str] = ""

    secret_key: str | None = knob(
        None,
        "Secret for signing tokens (default: generated and kept in the database).",
        secret=True,
    )
    master_key: str | None = knob(
        None,
        "Master key wrapping the per-workspace data keys: base64 of 32 bytes; several, "
        "comma-separated, during a rotation (current first).",
        secret=True,
    )
    master_key_file: str | None = knob(
        None,
        "File holding the master key. Neither on SQLite: a key file is generated next to the "
        "database at first start; PostgreSQL needs one of them.",
    )


@attrs.frozen(kw_only=True)
class StorageSettings:
    """The database and its backups (the engine's storage deadline is
    ``engine.storage_timeout_s``)."""

    LEGACY_PREFIX: ClassVar[str] = ""

    database_url: str = knob(
        "sqlite:///data/livechat.db", "sqlite:///path or postgresql://user@host/db."
    )
    backup_dir: str = knob("data/backups", "Where backups are written.")


@attrs.frozen(kw_only=True)
class ClusterSettings:
    """Several processes and hosts serving one installation (docs/deployment.md, "Cluster"):
    N server processes on this host under one parent that restarts a dead one, a Redis bus
    between processes and hosts. Both need PostgreSQL."""

    LEGACY_PREFIX: ClassVar[str] = ""

    workers: int = knob(
        1, "Server processes on this host, sharing one port (above 1 needs bus_url).", min=1
    )
    bus_url: str | None = knob(
        None,
        "The Redis bus between nodes: redis://[:password@]host:6379/0 (PostgreSQL only).",
        secret=True,
    )
    node_id: str | None = knob(
        None, "This node's name in leases and logs (default: host name and 6 hex, logged)."
    )
    bus_prefix: str = knob(
        "livechat", "Redis channel names start with it (one Redis, several clusters)."
    )
    lease_ttl_s: float = knob(
        3.0,
        "A node that stops renewing loses its workspaces' leases after this; others take over.",
        legacy="cluster_lease_ttl_s",
        min=1.0,
    )
    idle_release_s: float = knob(
        300.0,
        "A workspace with no socket and nothing pending this long is handed back by its node "
        "and placed again by load at its next use (0: never).",
    )


@attrs.frozen(kw_only=True)
class FileSettings:
    """Files in chats (docs/admin-api.md): server-wide limits a workspace may only lower."""

    LEGACY_PREFIX: ClassVar[str] = "files_"

    dir: str | None = knob(None, "Bytes on local disk (default: <sqlite db>.files).")
    max_bytes: int = knob(10 * 1024 * 1024, "Largest file.", min=1)
    max_storage_bytes: int = knob(1024 * 1024 * 1024, "All files of one workspace.", min=1)
    allowed_types: tuple[str, ...] = knob(
        (
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "text/plain",
        ),
        "Media types that may be uploaded (comma-separated).",
    )
    uploads_per_10min: int = knob(30, "Uploads per uploader (visitor or agent).")
    unsent_ttl_s: float = knob(86400.0, "An upload never sent in a message is deleted then.")
    s3_bucket: str | None = knob(
        None,
        "An S3-compatible bucket instead of dir (needs the s3 extra: boto3). Without keys, "
        "boto3's own credential chain applies.",
    )
    s3_endpoint_url: str | None = knob(None, "e.g. http://minio:9000 (default: AWS).")
    s3_region: str | None = knob(None, "The bucket's region.")
    s3_access_key_id: str | None = knob(None, "Access key id for the bucket.")
    s3_secret_access_key: str | None = knob(None, "Secret access key.", secret=True)
    s3_prefix: str = knob("", 'Object key prefix, e.g. "livechat/".')


@attrs.frozen(kw_only=True)
class MailSettings:
    """Outgoing mail and the offline-message inbox. Without smtp_url nothing is mailed and the
    widget promises no email; the inbox works either way."""

    LEGACY_PREFIX: ClassVar[str] = "mail_"

    smtp_url: str | None = knob(
        None,
        "smtp://host:25 (plain), smtp+starttls://user:pass@host:587, smtps://user:pass@host:465.",
        legacy="smtp_url",
        secret=True,
    )
    from_address: str | None = knob(
        None, "The From address; required with smtp_url.", legacy="mail_from"
    )
    smtp_ca_file: str | None = knob(
        None, "Trust this CA (PEM) for the SMTP server's certificate.", legacy="smtp_ca_file"
    )
    smtp_timeout_s: float = knob(
        30.0,
        "One delivery attempt: connect, TLS, dialogue.",
        legacy="smtp_timeout_s",
        min_exclusive=True,
    )
    threads: int = knob(2, "SMTP dialogues at once (worker threads).", min=1)
    poll_interval_s: float = knob(
        5.0, "Look for new offline messages and due mail this often.", min_exclusive=True
    )
    max_attempts: int = knob(8, "Then the mail is marked failed in the delivery log.", min=1)
    retry_base_s: float = knob(30.0, "First retry after this, doubling each time ...")
    retry_max_s: float = knob(3600.0, "... up to this.")
    inbox_scan_lookback_s: float = knob(
        7 * 24 * 3600.0, "Older closed chats never enter the inbox.", legacy="inbox_scan_lookback_s"
    )
    log_keep_days: int = knob(30, "Sent and failed mail (the delivery log) is deleted after this.")


@attrs.frozen(kw_only=True)
class WebhookSettings:
    """Outgoing webhooks (docs/webhooks.md)."""

    LEGACY_PREFIX: ClassVar[str] = "webhooks_"

    allow_private_targets: bool = knob(
        False,
        "Deliver to loopback/private addresses and plain http:// (tests, closed networks only).",
    )
    poll_interval_s: float = knob(
        1.0, "How often the outbox looks for new events.", min_exclusive=True
    )
    timeout_s: float = knob(10.0, "One HTTP attempt, connect to status line.", min_exclusive=True)
    retry_base_s: float = knob(10.0, "First retry after this, doubling each time ...")
    retry_max_s: float = knob(3600.0, "... up to this between attempts.")
    retry_window_s: float = knob(26 * 3600.0, "Then a delivery is given up (failed).")
    disable_after_failures: int = knob(
        50, "Failed attempts in a row that disable a subscription.", min=1
    )
    max_concurrent: int = knob(8, "Deliveries in flight at once (server-wide).", min=1)
    batch_size: int = knob(200, "Events fed and deliveries sent per step.", min=1)
    settle_s: float = knob(5.0, "Wait this long for a late commit before skipping a hole.")
    secret_overlap_s: float = knob(
        24 * 3600.0, "After a rotation the old secret still signs this long."
    )
