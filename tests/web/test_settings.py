"""The sectioned settings: precedence per section, flat aliases, start-up refusals through the
real command line, the generated docs and ``livechat config show``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

from engine import EngineConfig
from tests.web.client import open_peer, visitor
from tests.web.server import run_test_server
from web.errors import ConfigError
from web.settings import Settings, knobs, load_settings
from web.settings_docs import REDACTED, render_docs, render_toml

REPO = Path(__file__).resolve().parents[2]

# One key per section, and three values of its type (file, environment, flag).
SAMPLES: dict[str, tuple[str, tuple[Any, Any, Any]]] = {
    "server": ("port", (8101, 8102, 8103)),
    "websocket": ("ping_interval_s", (1.5, 2.5, 3.5)),
    "overload": ("retry_after_s", (1.5, 2.5, 3.5)),
    "rate_limits": ("frames_per_10s", (101, 102, 103)),
    "accounts": ("password_hash_queue", (101, 102, 103)),
    "sso": ("http_threads", (101, 102, 103)),
    "security": ("master_key_file", ("/k/a", "/k/b", "/k/c")),
    "storage": ("backup_dir", ("/b/a", "/b/b", "/b/c")),
    "cluster": ("lease_ttl_s", (1.5, 2.5, 3.5)),
    "files": ("max_bytes", (101, 102, 103)),
    "mail": ("log_keep_days", (101, 102, 103)),
    "webhooks": ("batch_size", (101, 102, 103)),
    "engine": ("idle_timeout_s", (1.5, 2.5, 3.5)),
}


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_every_section_has_a_precedence_sample() -> None:
    assert set(SAMPLES) == {f.name for f in attrs.fields(Settings)}


@pytest.mark.parametrize("section", sorted(SAMPLES))
def test_flag_beats_environment_beats_file_beats_default(section: str, tmp_path: Path) -> None:
    key, (in_file, in_env, in_flag) = SAMPLES[section]
    config = tmp_path / "livechat.toml"
    config.write_text(f"[{section}]\n{key} = {_toml(in_file)}\n")
    env = {f"LIVECHAT_{section.upper()}__{key.upper()}": str(in_env)}

    def got(**kwargs: Any) -> Any:
        return getattr(getattr(load_settings(**kwargs), section), key)

    default = getattr(getattr(Settings(), section), key)
    assert got(environ={}) == default
    assert got(environ={}, config_file=config) == in_file
    assert got(environ=env, config_file=config) == in_env
    flag = {f"{section}.{key}": str(in_flag)}
    assert got(overrides=flag, environ=env, config_file=config) == in_flag


def test_flat_names_from_before_the_sections_still_work(tmp_path: Path) -> None:
    config = tmp_path / "livechat.toml"
    config.write_text('port = 8123\nws_outbox_size = 17\nfiles_allowed_types = ["text/plain"]\n')
    env = {"LIVECHAT_RATE_MESSAGES_PER_10S": "7", "LIVECHAT_DATABASE_URL": "sqlite:///x.db"}
    env["LIVECHAT_BUS_PREFIX"] = "lc2"
    flat = {"mail_from": "a@b.c", "cluster_lease_ttl_s": "4.5"}
    settings = load_settings(flat, environ=env, config_file=config)
    assert settings.server.port == 8123
    assert settings.engine.outbox_size == 17
    assert settings.files.allowed_types == ("text/plain",)
    assert settings.rate_limits.messages_per_10s == 7
    assert settings.storage.database_url == "sqlite:///x.db"
    assert settings.mail.from_address == "a@b.c"
    assert settings.cluster.bus_prefix == "lc2"
    assert settings.cluster.lease_ttl_s == 4.5
    # a sectioned key and its flat name are one setting: the later layer wins ...
    both = load_settings({"engine.outbox_size": "9"}, environ={"LIVECHAT_WS_OUTBOX_SIZE": "5"})
    assert both.engine.outbox_size == 9
    # ... and within one layer the sectioned name, whatever the order
    env = {"LIVECHAT_ENGINE__OUTBOX_SIZE": "6", "LIVECHAT_WS_OUTBOX_SIZE": "5"}
    assert load_settings(environ=env).engine.outbox_size == 6
    flags = {"engine.outbox_size": "6", "ws_outbox_size": "5"}
    assert load_settings(flags, environ={}).engine.outbox_size == 6


def test_every_engine_knob_is_a_setting() -> None:
    engine_keys = {k.key for k in knobs() if k.section == "engine"}
    assert engine_keys == {f.name for f in attrs.fields(EngineConfig)}
    settings = load_settings(
        {f"engine.{f.name}": str(f.default) for f in attrs.fields(EngineConfig)}, environ={}
    )
    assert settings.engine == EngineConfig()  # each one reaches the engine's own class


def test_other_livechat_variables_are_not_settings() -> None:
    env = {"LIVECHAT_TEST_PG_URL": "postgresql://x", "LIVECHAT_SKIP_BROWSER": "1"}
    assert load_settings(environ=env) == load_settings(environ={})


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args],
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("file_text", "env", "flags", "named"),
    [
        ("[engine]\nidle_timeout = 5\n", {}, (), "engine.idle_timeout"),
        ("[nosuch]\nx = 1\n", {}, (), "nosuch"),
        ("nope = 1\n", {}, (), "nope"),
        ('[server]\nport = "80"\n', {}, (), "server.port"),
        ("[server]\nport = 70000\n", {}, (), "server.port"),
        ("", {"LIVECHAT_ENGINE__NO_SUCH_KNOB": "1"}, (), "engine.no_such_knob"),
        ("", {"LIVECHAT_ENGINE__IDLE_TIMEOUT_S": "soon"}, (), "engine.idle_timeout_s"),
        ("", {"LIVECHAT_WS_OUTBOX_SIZE": "-1"}, (), "engine.outbox_size"),
        ("", {}, ("--set", "engine.default_routing_mode=random"), "engine.default_routing_mode"),
        ("", {}, ("--set", "webhooks.batch_size=0"), "webhooks.batch_size"),
        ("", {}, ("--set", "engine.ask_timeout_s=inf"), "engine.ask_timeout_s"),
    ],
)
def test_a_bad_setting_stops_the_server_with_status_2_naming_the_key(
    tmp_path: Path, file_text: str, env: dict[str, str], flags: tuple[str, ...], named: str
) -> None:
    config = tmp_path / "livechat.toml"
    config.write_text(file_text)
    db = f"sqlite:///{tmp_path}/t.db"
    done = _cli("serve", "--config", str(config), "--database-url", db, *flags, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("livechat: error: ")
    assert named in done.stderr
    assert not (tmp_path / "t.db").exists()  # refused before anything started


def test_config_show_prints_the_effective_settings_without_secrets(tmp_path: Path) -> None:
    done = _cli(
        "config",
        "show",
        "--set",
        "engine.idle_timeout_s=42",
        "--set",
        "security.secret_key=hunter2hunter2",
        env={"LIVECHAT_FILES__S3_SECRET_ACCESS_KEY": "s3-secret-value", "LIVECHAT_PORT": "8765"},
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout and "s3-secret-value" not in done.stdout
    shown = tomllib.loads(done.stdout)
    assert shown["engine"]["idle_timeout_s"] == 42.0
    assert shown["server"]["port"] == 8765
    assert shown["security"]["secret_key"] == REDACTED


def test_config_show_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "engine.idle_timeout_s": "42",
            "files.allowed_types": "a/b,c/d",
            "public_url": "https://x",
        },
        environ={},
    )
    config = tmp_path / "shown.toml"
    config.write_text(render_toml(settings))
    assert load_settings(environ={}, config_file=config) == settings


def test_the_docs_list_every_setting_as_the_code_defines_it() -> None:
    """docs/configuration.md is generated; regenerate it with
    ``livechat config docs > docs/configuration.md`` after changing a setting."""
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == render_docs()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/configuration.md)" in readme


def test_keys_that_depend_on_each_other_are_checked_together() -> None:
    with pytest.raises(ConfigError, match=r"engine\.storage_timeout_s: must be below"):
        load_settings({"engine.storage_timeout_s": "12"}, environ={})
    with pytest.raises(ConfigError, match=r"websocket\.outbox_max_size: must be at least"):
        load_settings({"engine.outbox_size": "100", "ws_outbox_max_size": "99"}, environ={})
    assert load_settings({"engine.ask_timeout_s": "20", "storage_timeout_s": "12"}, environ={})


def test_overrides_name_the_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting engine\.nope"):
        load_settings({"engine.nope": "1"}, environ={})


async def test_the_server_runs_with_the_engine_section(tmp_path: Path) -> None:
    overrides = {
        "engine.idle_timeout_s": 123.0,  # not settable before the sections
        "engine.message_rate_per_s": 0.01,
        "engine.message_burst": 2,
    }
    async with (
        run_test_server(tmp_path, **overrides) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        assert srv.services is not None
        assert srv.services.engine.config.idle_timeout_s == 123.0
        await visitor(srv, peer)
        replies = [
            await peer.request("send_message", client_msg_id=f"m{i}", text="hi") for i in range(3)
        ]
        assert [r["type"] for r in replies] == ["result", "result", "error"]
        assert replies[2]["code"] == "rate_limited"


def test_code_reads_settings_by_section() -> None:
    """Flat attributes (``ws_outbox_size``) are gone from the settings object; mypy misses them in
    code it believes unreachable, so branches merged later are checked here too."""
    from web.settings import _LEGACY

    flat = sorted({*_LEGACY, "tls_enabled", "base_url", "dead_peer_timeout_s"}, key=len)
    pattern = re.compile(r"\b(settings|s)\.(" + "|".join(reversed(flat)) + r")\b")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for top in ("web", "engine", "bench", "tests")
        for path in sorted((REPO / top).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and "ws.settings" not in line
    ]
    assert found == []
