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
    ws_outbox_size: int = 256  # pushes queued per connection before "slow consumer"
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
    # A sender hears storage_unavailable within this when the database cannot commit (locked
    # by another process, unreachable); a commit stuck for half of it refuses newcomers at once.
    storage_timeout_s: float = 4.0
    backup_dir: str = "data/backups"
    # Costly reads (web/costly.py): per workspace, sliding windows; server-wide export slots.
    rate_exports_per_hour: int = 10  # exports and backups of one workspace
    rate_searches_per_min: int = 60  # full-text searches of one workspace
    export_max_concurrent: int = 2  # exports streaming at once; more: 429 exports_busy
    housekeeping_interval_s: float = 3600.0  # purge terminated workspaces, apply retention
    # Python's cyclic GC: a young-generation collection after this many net allocations (Python's
    # default is 700); start-up objects are frozen out of collections. 0: leave the GC alone.
    gc_gen0_threshold: int = 50_000
    # Encryption at rest (docs/security.md): the master key wrapping the per-workspace data
    # keys, as base64 of 32 bytes (LIVECHAT_MASTER_KEY; several, comma-separated, during a
    # rotation: current first) or a file holding it. Neither on SQLite: a key file is generated
    # next to the database at first start. PostgreSQL needs one of them.
    master_key: str | None = attrs.field(default=None, repr=False)
    master_key_file: str | None = None

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
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"setting 'log_level': {settings.log_level!r} is not one of {LOG_LEVELS}")
    try:
        backend_of(settings.database_url)
    except InvalidDatabaseURL as err:
        raise ConfigError(f"setting 'database_url': {err}") from err
