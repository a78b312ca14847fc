"""One frozen, sectioned settings object, loaded once at start-up from flags, environment and a
file (docs/configuration.md lists every key).

Precedence, per key: flag (``--set section.key=value`` and the named flags) > environment
(``LIVECHAT_<SECTION>__<KEY>``) > config file (TOML, ``[section]`` tables) > default. The flat
names of the settings before the sections (``ws_outbox_size``, ``LIVECHAT_DATABASE_URL``...) are
still accepted everywhere as aliases of their sectioned key. An unknown key, a wrong type or an
out-of-range value raises ``ConfigError`` naming the key (``livechat`` exits with status 2).
Nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
import socket
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from engine import EngineConfig
from storage import InvalidDatabaseURL, backend_of
from web.errors import ConfigError
from web.settings_sections import (
    AccountSettings,
    ClusterSettings,
    FileSettings,
    MailSettings,
    OverloadSettings,
    RateLimitSettings,
    SecuritySettings,
    ServerSettings,
    SsoSettings,
    StorageSettings,
    WebhookSettings,
    WebSocketSettings,
)

__all__ = ["ENV_PREFIX", "Knob", "Settings", "generate_node_id", "knobs", "load_settings"]

ENV_PREFIX = "LIVECHAT_"
# The web server's engine defaults differ from the engine's own (its tests) here only.
ENGINE_DEFAULTS = EngineConfig(agent_auto_away_after_s=900.0)


@attrs.frozen(kw_only=True)
class Settings:
    """The whole process's settings, one section per concern."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    websocket: WebSocketSettings = attrs.field(factory=WebSocketSettings)
    overload: OverloadSettings = attrs.field(factory=OverloadSettings)
    rate_limits: RateLimitSettings = attrs.field(factory=RateLimitSettings)
    accounts: AccountSettings = attrs.field(factory=AccountSettings)
    sso: SsoSettings = attrs.field(factory=SsoSettings)
    security: SecuritySettings = attrs.field(factory=SecuritySettings)
    storage: StorageSettings = attrs.field(factory=StorageSettings)
    cluster: ClusterSettings = attrs.field(factory=ClusterSettings)
    files: FileSettings = attrs.field(factory=FileSettings)
    mail: MailSettings = attrs.field(factory=MailSettings)
    webhooks: WebhookSettings = attrs.field(factory=WebhookSettings)
    # The engine's own settings class: every knob of it is settable in [engine].
    engine: EngineConfig = attrs.field(default=ENGINE_DEFAULTS)


# Flat names of engine knobs from before the sections (the engine's own names differ).
_ENGINE_LEGACY = {
    "ws_outbox_size": "outbox_size",
    "rate_visitor_messages_per_s": "message_rate_per_s",
    "rate_visitor_message_burst": "message_burst",
    "storage_timeout_s": "storage_timeout_s",
    "actor_max_restarts": "restart_max",
    "actor_period_s": "restart_period_s",
    "engine_max_restarts": "engine_restart_max",
    "engine_period_s": "engine_restart_period_s",
    "engine_shutdown_deadline_s": "shutdown_deadline_s",
    "agent_reconnect_grace_s": "disconnect_grace_s",
    "agent_auto_away_after_s": "agent_auto_away_after_s",
}
# The engine stays free of web concerns: its ranges are stated here (default: not negative).
_ENGINE_BOUNDS: dict[str, dict[str, Any]] = {
    "mailbox_size": {"min": 1},
    "outbox_size": {"min": 1},
    "ask_timeout_s": {"min_exclusive": True},
    "storage_timeout_s": {"min_exclusive": True},
    "typing_ttl_s": {"min_exclusive": True},
    "message_rate_per_s": {"min_exclusive": True},
    "message_burst": {"min": 1},
    "recent_events": {"min": 1},
    "restart_period_s": {"min_exclusive": True},
    "engine_restart_period_s": {"min_exclusive": True},
    "tick_interval_s": {"min_exclusive": True},
    "idle_timeout_s": {"min_exclusive": True},
    "router_idle_timeout_s": {"min_exclusive": True},
    "default_routing_mode": {"choices": ("auto", "manual")},
}


@attrs.frozen(kw_only=True)
class Knob:
    """One settable key: where it lives, its type, default, range and documentation."""

    section: str
    key: str
    type: Any
    default: Any
    doc: str
    legacy: str | None
    secret: bool = False
    min: float | None = 0
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}__{self.key.upper()}"


def _knobs() -> dict[str, Knob]:
    defaults = Settings()
    found: dict[str, Knob] = {}
    for section in attrs.fields(Settings):
        section_cls = type(getattr(defaults, section.name))
        hints = typing.get_type_hints(section_cls)
        prefix = getattr(section_cls, "LEGACY_PREFIX", None)
        for field in attrs.fields(section_cls):
            meta = dict(field.metadata)
            if section_cls is EngineConfig:
                meta.update(_ENGINE_BOUNDS.get(field.name, {}))
            legacy = meta.get("legacy")
            if legacy is None and prefix is not None:
                legacy = prefix + field.name
            knob = Knob(
                section=section.name,
                key=field.name,
                type=hints[field.name],
                default=getattr(getattr(defaults, section.name), field.name),
                doc=meta["doc"],
                legacy=legacy,
                secret=meta.get("secret", False),
                min=meta.get("min", 0),
                max=meta.get("max"),
                min_exclusive=meta.get("min_exclusive", False),
                choices=meta.get("choices"),
            )
            found[knob.name] = knob
    for old, new in _ENGINE_LEGACY.items():
        found[f"engine.{new}"] = attrs.evolve(found[f"engine.{new}"], legacy=old)
    return found


_KNOBS = _knobs()
_LEGACY = {k.legacy: k for k in _KNOBS.values() if k.legacy is not None}
_SECTIONS = {f.name for f in attrs.fields(Settings)}


def knobs() -> Iterator[Knob]:
    """Every setting, section by section in declaration order."""
    return iter(_KNOBS.values())


def _dotted(name: str) -> str:
    return name.replace("-", "_").replace("__", ".").lower()


def _find(name: str, source: str) -> Knob:
    """The knob a name means: ``section.key``, or a flat name from before the sections."""
    dotted = _dotted(name)
    knob = _KNOBS.get(dotted) or _LEGACY.get(dotted)
    if knob is None:
        raise ConfigError(f"{source}: unknown setting {dotted} (see docs/configuration.md)")
    return knob


def _coerce(knob: Knob, raw: Any, source: str, *, typed: bool) -> Any:
    """A raw value as the knob's type, in range. ``typed``: a TOML value, which must already
    have the right type (``port = "80"`` is refused); otherwise text is parsed (env, flags)."""
    try:
        if typed:
            _check_type(knob.type, raw)
        value = _convert(knob.type, raw)
        _check_range(knob, value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"setting {knob.name} ({source}): {err}") from err
    return value


_TOML_TYPES: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str,),
    tuple[str, ...]: (list,),
}
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _check_type(kind: Any, raw: Any) -> None:
    if isinstance(kind, types.UnionType):
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    allowed = _TOML_TYPES[kind]
    if not isinstance(raw, allowed) or (isinstance(raw, bool) and bool not in allowed):
        expected = _TYPE_NAMES.get(kind, "a list of strings")
        raise TypeError(f"expected {expected}, got {type(raw).__name__} {raw!r}")


def _convert(kind: Any, raw: Any) -> Any:
    if isinstance(kind, types.UnionType):  # ``X | None``: an empty string means None
        if raw is None or raw == "":
            return None
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind is int:
        if isinstance(raw, (bool, float)):
            raise TypeError(f"expected an integer, got {raw!r}")
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if kind is float:
        if isinstance(raw, bool):
            raise TypeError(f"expected a number, got {raw!r}")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return number
    if kind == tuple[str, ...]:
        if isinstance(raw, str):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise TypeError(f"expected a list of strings, got {raw!r}")
    if kind is str:
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {raw!r}")
        return raw
    raise TypeError(f"unsupported setting type {kind!r}")  # a new knob of a new type


def _check_range(knob: Knob, value: Any) -> None:
    if knob.choices is not None and value not in knob.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(knob.choices)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if knob.min is not None:
        if knob.min_exclusive and not value > knob.min:
            raise ValueError(f"must be greater than {knob.min:g}, got {value}")
        if value < knob.min:
            raise ValueError(f"must be at least {knob.min:g}, got {value}")
    if knob.max is not None and value > knob.max:
        raise ValueError(f"must be at most {knob.max:g}, got {value}")


def _file_values(path: str | Path) -> Iterator[tuple[str, Any, str]]:
    """``(name, value, source)`` of a TOML file: ``[section]`` tables or flat legacy keys."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            for sub, item in value.items():
                yield f"{key}.{sub}", item, f"config file {path}, [{key}] {sub}"
        else:
            yield key, value, f"config file {path}"


def _env_values(env: Mapping[str, str]) -> Iterator[tuple[str, Any, str]]:
    """``LIVECHAT_SECTION__KEY`` (every one must exist) and the flat names that still work;
    other ``LIVECHAT_*`` variables (``LIVECHAT_CONFIG``, tools' own) are not settings."""
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if "__" in name or name in _LEGACY:
            yield name, value, var


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build the settings from a TOML file, then ``LIVECHAT_*`` variables, then overrides
    (flags: ``section.key`` or a flat legacy name; ``None`` means not given)."""
    env = os.environ if environ is None else environ
    chosen: dict[str, Any] = {}
    path = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    layers: list[tuple[bool, Iterator[tuple[str, Any, str]]]] = []
    if path:
        layers.append((True, _file_values(path)))
    layers.append((False, _env_values(env)))
    layers.append(
        (
            False,
            (
                (name, value, f"flag {name}")
                for name, value in (overrides or {}).items()
                if value is not None
            ),
        )
    )
    for typed, layer in layers:
        found = [(_find(name, source), name, value, source) for name, value, source in layer]
        # within one place, a sectioned key wins over its flat name (whatever the order)
        found.sort(key=lambda item: item[0].name == _dotted(item[1]))
        for knob, _name, value, source in found:
            chosen[knob.name] = _coerce(knob, value, source, typed=typed)
    settings = _build(chosen)
    _validate(settings)
    return settings


def _build(chosen: Mapping[str, Any]) -> Settings:
    defaults = Settings()
    sections: dict[str, Any] = {}
    for section in _SECTIONS:
        values = {
            knob.key: chosen[name]
            for name, knob in _KNOBS.items()
            if knob.section == section and name in chosen
        }
        sections[section] = attrs.evolve(getattr(defaults, section), **values)
    return Settings(**sections)


def _validate(settings: Settings) -> None:
    """What no single key's range says: pairs of keys, files that must exist, URLs."""
    server = settings.server
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError("setting server.tls_cert: TLS needs both --tls-cert and --tls-key")
    for name in ("tls_cert", "tls_key"):
        file = getattr(server, name)
        if file is not None and not Path(file).is_file():
            raise ConfigError(f"setting server.{name}: no such file {file}")
    if settings.engine.outbox_size > settings.websocket.outbox_max_size:
        raise ConfigError(
            "setting websocket.outbox_max_size: must be at least engine.outbox_size "
            f"({settings.engine.outbox_size}), got {settings.websocket.outbox_max_size}"
        )
    engine = settings.engine
    if not engine.storage_timeout_s < engine.ask_timeout_s:
        raise ConfigError(
            "setting engine.storage_timeout_s: must be below engine.ask_timeout_s "
            f"({engine.ask_timeout_s:g}), got {engine.storage_timeout_s:g}"
        )
    _validate_mail(settings.mail)
    try:
        backend, _ = backend_of(settings.storage.database_url)
    except InvalidDatabaseURL as err:
        raise ConfigError(f"setting storage.database_url: {err}") from err
    _validate_cluster(settings.cluster, backend)


BUS_SCHEMES = ("redis", "rediss", "unix")


def generate_node_id() -> str:
    """A node id unique enough to tell nodes apart in leases and logs: host name and 6 hex."""
    return f"{socket.gethostname()}-{os.urandom(3).hex()}"


def _validate_cluster(cluster: ClusterSettings, backend: str) -> None:
    """Several processes need PostgreSQL (shared leases and sequences) and a bus between them."""
    clustered = cluster.workers > 1 or cluster.bus_url is not None
    if clustered and backend == "sqlite":
        raise ConfigError(
            "--workers above 1 and --bus-url need PostgreSQL (--database-url postgresql://...):"
            " SQLite is the one-process embedded database, and a second process on it would"
            " split delivery"
        )
    if cluster.workers > 1 and cluster.bus_url is None:
        raise ConfigError(
            "--workers above 1 needs --bus-url redis://...: without a bus, events committed by"
            " one worker never reach the sockets of another"
        )
    if cluster.bus_url is not None and urlsplit(cluster.bus_url).scheme not in BUS_SCHEMES:
        raise ConfigError(
            f"setting cluster.bus_url: use redis://host:6379/0 (one of {BUS_SCHEMES})"
        )


SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def _validate_mail(mail: MailSettings) -> None:
    """The mail settings (web/mail.py); the URL's password is never repeated in an error."""
    if mail.smtp_url is None:
        return
    try:
        url = urlsplit(mail.smtp_url)
        port = url.port
    except ValueError:
        raise ConfigError("setting mail.smtp_url: not a valid URL") from None
    if url.scheme not in SMTP_SCHEMES or not url.hostname:
        raise ConfigError(
            f"setting mail.smtp_url: use a URL like smtp+starttls://host:587 ({SMTP_SCHEMES})"
        )
    if port == 0:
        raise ConfigError("setting mail.smtp_url: port 0")
    if not mail.from_address or "@" not in mail.from_address:
        raise ConfigError(
            "setting mail.from_address: an email address is required with mail.smtp_url"
        )
    if mail.smtp_ca_file is not None and not Path(mail.smtp_ca_file).is_file():
        raise ConfigError(f"setting mail.smtp_ca_file: no such file {mail.smtp_ca_file}")
