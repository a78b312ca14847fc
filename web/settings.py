"""One frozen settings object, loaded once at start-up from flags, environment and a file.

Precedence: command-line flag > environment variable (``LIVECHAT_*``) > config file > default.
Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from storage import InvalidDatabaseURL, backend_of
from web.errors import ConfigError


@attrs.frozen(kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///data/livechat.db"
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    secret_key: str | None = None
    public_url: str | None = None
    demo: bool = True
    log_level: str = "info"
    # Cluster (docs/deployment.md, "Cluster"): N server processes on this host under one parent
    # that restarts a dead one; a Redis bus between processes and hosts; this node's name in
    # leases and logs (generated and logged when absent). Both need PostgreSQL.
    workers: int = 1
    bus_url: str | None = attrs.field(default=None, repr=False)  # redis://[:password@]host:port/db
    node_id: str | None = None
    bus_prefix: str = "livechat"  # Redis channel names start with it (one bus, several clusters)
    # a node that stops renewing loses its conversations' leases after this; others take over
    cluster_lease_ttl_s: float = 3.0
    shutdown_grace_s: float = 10.0
    read_timeout_s: float = 30.0
    # a connection must complete its request headers within this (also the keep-alive idle
    # timeout between requests, and the TLS handshake deadline)
    http_header_timeout_s: float = 5.0
    http_max_body_bytes: int = 1024 * 1024
    trust_proxy_headers: bool = False  # take the client IP from X-Forwarded-For
    # WebSocket protocol (docs/protocol.md)
    ws_max_message_bytes: int = 64 * 1024  # larger frames get a frame_too_large error
    ws_hard_max_message_bytes: int = 1024 * 1024  # larger frames close the socket with 1009
    ws_auth_timeout_s: float = 10.0  # first frame (hello/auth) must arrive within this
    ws_ping_interval_s: float = 20.0  # server sends {"type":"ping"} this often
    # no frame at all from the peer for this long: close with 4001. 0 (default): two missed
    # pings, 2 x ws_ping_interval_s plus a slack (``dead_peer_timeout_s``)
    ws_dead_peer_timeout_s: float = 0.0
    # Overload policy (docs/protocol.md, "Overload"): push back on senders, keep receivers.
    ws_outbox_size: int = 256  # pushes queued per connection before it counts as backed up
    ws_outbox_max_size: int = 8192  # hard cap: a connection this far behind is dropped (1013)
    ws_slow_consumer_grace_s: float = 10.0  # backed up with no socket write for this long: 1013
    overload_loop_lag_s: float = 0.5  # event-loop lag that means the process is behind (0: off)
    overload_backed_up_fraction: float = 0.01  # of sockets backed up but draining: behind too
    overload_retry_after_s: float = 1.0  # told to senders while shedding (jittered +-50 %)
    ws_max_connections_per_ip: int = 50
    ws_max_sockets_per_agent: int = 8  # live console sockets per account; more: error + 4002
    # a client whose rate-limited requests keep coming before the retry_after_s it was given,
    # for this long: close with 1008
    ws_rate_limited_close_after_s: float = 10.0
    # rate limits (sliding windows)
    rate_frames_per_10s: int = 200  # per connection, every frame
    rate_messages_per_10s: int = 20  # per connection
    rate_typing_per_10s: int = 20  # per connection
    rate_ip_messages_per_10s: int = 200  # per client IP, all its connections
    rate_new_conversations_per_hour: int = 10  # per client IP
    rate_profile_updates_per_min: int = 10  # per visitor (update_profile), all its connections
    # per visitor, all its connections: the engine's token bucket for durable sends
    rate_visitor_messages_per_s: float = 5.0
    rate_visitor_message_burst: int = 20
    # accounts
    session_idle_timeout_s: float = 8 * 3600.0
    session_absolute_timeout_s: float = 7 * 24 * 3600.0
    login_failures_per_ip_per_15min: int = 30
    login_failures_per_account_backoff_after: int = 3  # then 1 s, 2 s, 4 s ... capped
    login_backoff_max_s: float = 300.0
    password_hash_threads: int = 2
    # logins/password changes waiting for a hashing thread; more: 503 with Retry-After at once
    password_hash_queue: int = 8
    engine_shutdown_deadline_s: float = 5.0
    # Two-factor login and single sign-on (docs/security.md)
    login_second_factor_ttl_s: float = 300.0  # password accepted: the code must follow within
    sso_http_timeout_s: float = 10.0  # each call to an identity provider (discovery, token, keys)
    sso_http_threads: int = 4  # identity-provider calls at once (worker threads)
    # OpenID Connect issuers over plain http, only on loopback (a provider the tests start)
    sso_allow_http_loopback: bool = False
    # A sender hears storage_unavailable within this when the database cannot commit (locked
    # by another process, unreachable); a commit stuck for half of it refuses newcomers at once.
    storage_timeout_s: float = 4.0
    backup_dir: str = "data/backups"
    # Costly reads (web/costly.py): per workspace, sliding windows; server-wide export slots.
    rate_exports_per_hour: int = 10  # exports and backups of one workspace
    rate_searches_per_min: int = 60  # full-text searches of one workspace
    export_max_concurrent: int = 2  # exports streaming at once; more: 429 exports_busy
    housekeeping_interval_s: float = 3600.0  # purge terminated workspaces, apply retention
    # Files in chats (web/files.py). Server-wide defaults; a workspace's ``files`` settings
    # (PUT /api/v1/settings/files) may only lower them.
    files_dir: str | None = None  # bytes on local disk; default: <sqlite db>.files
    files_max_bytes: int = 10 * 1024 * 1024  # one file
    files_max_storage_bytes: int = 1024 * 1024 * 1024  # all files of one workspace
    files_allowed_types: tuple[str, ...] = (
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "application/pdf",
        "text/plain",
    )
    files_uploads_per_10min: int = 30  # per uploader (visitor or agent)
    files_unsent_ttl_s: float = 86400.0  # an upload never sent in a message is deleted then
    # An S3-compatible bucket instead of files_dir (needs the ``s3`` extra: boto3). Without keys,
    # boto3's own credential chain applies (its environment variables, ~/.aws, instance roles).
    files_s3_bucket: str | None = None
    files_s3_endpoint_url: str | None = None  # e.g. http://minio:9000; None: AWS
    files_s3_region: str | None = None
    files_s3_access_key_id: str | None = None
    files_s3_secret_access_key: str | None = None
    files_s3_prefix: str = ""  # object key prefix, e.g. "livechat/"
    # Python's cyclic GC: a young-generation collection after this many net allocations (Python's
    # default is 700); start-up objects are frozen out of collections. 0: leave the GC alone.
    gc_gen0_threshold: int = 50_000
    # Encryption at rest (docs/security.md): the master key wrapping the per-workspace data
    # keys, as base64 of 32 bytes (LIVECHAT_MASTER_KEY; several, comma-separated, during a
    # rotation: current first) or a file holding it. Neither on SQLite: a key file is generated
    # next to the database at first start. PostgreSQL needs one of them.
    master_key: str | None = attrs.field(default=None, repr=False)
    master_key_file: str | None = None
    # Outgoing mail and the offline-message inbox (web/mail.py). Without smtp_url nothing is
    # mailed and the widget promises no email; the inbox works either way.
    # smtp://host:25 (plain), smtp+starttls://user:pass@host:587, smtps://user:pass@host:465
    smtp_url: str | None = None
    mail_from: str | None = None  # the From address; required with smtp_url
    smtp_ca_file: str | None = None  # trust this CA (PEM) for the SMTP server's certificate
    smtp_timeout_s: float = 30.0  # one delivery attempt: connect, TLS, dialogue
    mail_threads: int = 2  # SMTP dialogues at once (worker threads)
    mail_poll_interval_s: float = 5.0  # look for new offline messages and due mail this often
    mail_max_attempts: int = 8  # then the mail is marked failed in the delivery log
    mail_retry_base_s: float = 30.0  # first retry after this, doubling each time
    mail_retry_max_s: float = 3600.0  # ... up to this
    password_reset_ttl_s: float = 3600.0  # a reset link works once, within this
    invitation_ttl_s: float = 7 * 24 * 3600.0  # a new agent's set-password link
    inbox_scan_lookback_s: float = 7 * 24 * 3600.0  # older closed chats never enter the inbox
    mail_log_keep_days: int = 30  # sent and failed mail (the delivery log) is deleted after this
    # Webhooks (web/webhooks.py, docs/webhooks.md)
    # deliver to loopback/private addresses and plain http:// (tests, closed networks only: SSRF)
    webhooks_allow_private_targets: bool = False
    webhooks_poll_interval_s: float = 1.0  # how often the outbox looks for new events
    webhooks_timeout_s: float = 10.0  # one HTTP attempt, connect to status line
    webhooks_retry_base_s: float = 10.0  # first retry after this, doubling each time ...
    webhooks_retry_max_s: float = 3600.0  # ... up to this between attempts
    webhooks_retry_window_s: float = 26 * 3600.0  # then a delivery is given up (failed)
    webhooks_disable_after_failures: int = 50  # failed attempts in a row disable a subscription
    webhooks_max_concurrent: int = 8  # deliveries in flight at once (server-wide)
    webhooks_batch_size: int = 200  # events fed / deliveries sent per step
    webhooks_settle_s: float = 5.0  # wait this long for a late commit before skipping a hole
    webhooks_secret_overlap_s: float = 24 * 3600.0  # after a rotation the old secret still signs
    # Supervision and agent presence (issue 11, see docs/architecture.md "Actors and
    # supervision"). Restart intensities, from the root down: nested intensities multiply, so
    # the upper levels are kept low.
    supervisor_max_restarts: int = 1  # root "livechat": restarts of its children in ...
    supervisor_period_s: float = 60.0  # ... this window, else the server stops (exit 1)
    engine_max_restarts: int = 3  # "engine": restarts of a registry or task in ...
    engine_period_s: float = 60.0
    actor_max_restarts: int = 5  # one conversation/visitor/agent/router key: restarts in ...
    actor_period_s: float = 10.0  # ... this window, else that key alone is stopped
    agent_reconnect_grace_s: float = 30.0  # a dropped agent keeps their chats this long
    agent_auto_away_after_s: float = 900.0  # accepting and idle this long: away (0: never)
    # Operators only, off in production: POST /api/v1/ops/faults crashes one actor on purpose
    # (to check restarts and alerting on a staging server).
    debug_fault_injection: bool = False

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def dead_peer_timeout_s(self) -> float:
        """Silence after which a socket is dead: ``ws_dead_peer_timeout_s``, or by default two
        missed pings plus a slack for a pong delayed by a busy client or network."""
        if self.ws_dead_peer_timeout_s > 0:
            return self.ws_dead_peer_timeout_s
        return 2 * self.ws_ping_interval_s + min(5.0, self.ws_ping_interval_s / 2)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self.host}:{self.port}"


_FIELDS = {f.name: f for f in attrs.fields(Settings)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a raw value (string from env/flags, or TOML value) into the field's type."""
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected a boolean, got {raw!r}")
        if isinstance(default, int):
            value = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if isinstance(default, float):
            value_f = float(raw)
            if value_f < 0:
                raise ValueError("must not be negative")
            return value_f
        if isinstance(default, tuple):
            if isinstance(raw, str):
                return tuple(item.strip() for item in raw.split(",") if item.strip())
            return tuple(str(item) for item in raw)
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"setting {name!r}: {err}") from err


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build the settings from a TOML file, then ``LIVECHAT_*`` variables, then overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or env.get("LIVECHAT_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from err
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(name, value)
    for name in _FIELDS:
        env_value = env.get(f"LIVECHAT_{name.upper()}")
        if env_value is not None:
            values[name] = _coerce(name, env_value)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value)
    settings = Settings(**values)
    _validate(settings)
    return settings


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _validate(settings: Settings) -> None:
    """Refuse, at start-up and with the setting's name, what would otherwise fail later."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    for name in ("tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"setting {name!r}: no such file {path}")
    if not settings.storage_timeout_s > 0:
        raise ConfigError("setting 'storage_timeout_s' must be greater than 0")
    if not (0 < settings.port < 65536):
        raise ConfigError(f"port {settings.port} is out of range 1-65535")
    if not (0 < settings.ws_outbox_size <= settings.ws_outbox_max_size):
        raise ConfigError(
            "setting 'ws_outbox_max_size': must be at least ws_outbox_size "
            f"({settings.ws_outbox_size}), got {settings.ws_outbox_max_size}"
        )
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"setting 'log_level': {settings.log_level!r} is not one of {LOG_LEVELS}")
    _validate_mail(settings)
    try:
        backend, _ = backend_of(settings.database_url)
    except InvalidDatabaseURL as err:
        raise ConfigError(f"setting 'database_url': {err}") from err
    _validate_cluster(settings, backend)


BUS_SCHEMES = ("redis", "rediss", "unix")


def generate_node_id() -> str:
    """A node id unique enough to tell nodes apart in leases and logs: host name and 6 hex."""
    import socket

    return f"{socket.gethostname()}-{os.urandom(3).hex()}"


def _validate_cluster(settings: Settings, backend: str) -> None:
    """Several processes need PostgreSQL (shared leases and sequences) and a bus between them."""
    if settings.workers < 1:
        raise ConfigError("setting 'workers' must be at least 1")
    clustered = settings.workers > 1 or settings.bus_url is not None
    if clustered and backend == "sqlite":
        raise ConfigError(
            "--workers above 1 and --bus-url need PostgreSQL (--database-url postgresql://...):"
            " SQLite is the one-process embedded database, and a second process on it would"
            " split delivery"
        )
    if settings.workers > 1 and settings.bus_url is None:
        raise ConfigError(
            "--workers above 1 needs --bus-url redis://...: without a bus, events committed by"
            " one worker never reach the sockets of another"
        )
    if settings.bus_url is not None:
        from urllib.parse import urlsplit

        scheme = urlsplit(settings.bus_url).scheme
        if scheme not in BUS_SCHEMES:
            raise ConfigError(f"setting 'bus_url': use redis://host:6379/0 (one of {BUS_SCHEMES})")
    if not settings.cluster_lease_ttl_s >= 1.0:
        raise ConfigError("setting 'cluster_lease_ttl_s' must be at least 1 second")


SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def _validate_mail(settings: Settings) -> None:
    """The mail settings (web/mail.py); the URL's password is never repeated in an error."""
    if settings.smtp_url is None:
        return
    from urllib.parse import urlsplit

    try:
        url = urlsplit(settings.smtp_url)
        port = url.port
    except ValueError:
        raise ConfigError("setting 'smtp_url': not a valid URL") from None
    if url.scheme not in SMTP_SCHEMES or not url.hostname:
        raise ConfigError(
            f"setting 'smtp_url': use a URL like smtp+starttls://host:587 ({SMTP_SCHEMES})"
        )
    if port == 0:
        raise ConfigError("setting 'smtp_url': port 0")
    if not settings.mail_from or "@" not in settings.mail_from:
        raise ConfigError("setting 'mail_from': an email address is required with smtp_url")
    if settings.smtp_ca_file is not None and not Path(settings.smtp_ca_file).is_file():
        raise ConfigError(f"setting 'smtp_ca_file': no such file {settings.smtp_ca_file}")
    if not settings.smtp_timeout_s > 0 or not settings.mail_poll_interval_s > 0:
        raise ConfigError("settings 'smtp_timeout_s' and 'mail_poll_interval_s' must be > 0")
    if settings.mail_threads < 1 or settings.mail_max_attempts < 1:
        raise ConfigError("settings 'mail_threads' and 'mail_max_attempts' must be >= 1")
