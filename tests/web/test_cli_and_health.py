from __future__ import annotations

import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from web.errors import ConfigError
from web.settings import load_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flags_override_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "livechat.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\n')
    settings = load_settings(
        {"port": 9002}, environ={"LIVECHAT_HOST": "127.0.0.2"}, config_file=config
    )
    assert settings.server.port == 9002
    assert settings.server.host == "127.0.0.2"


def test_bad_config_values_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={"LIVECHAT_PORT": "eighty"})
    with pytest.raises(ConfigError, match="TLS"):
        load_settings({"tls_cert": "x.pem"}, environ={})
    with pytest.raises(ConfigError, match="database_url"):
        load_settings({"database_url": "mysql://db/chat"}, environ={})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(environ={"LIVECHAT_LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="tls_cert"):
        load_settings({"tls_cert": str(tmp_path / "no.pem"), "tls_key": str(tmp_path / "no.key")})
    config = tmp_path / "bad.toml"
    config.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_settings(environ={}, config_file=config)


def test_cli_help_explains_each_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "web.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in out


def test_serve_answers_healthz(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "web.cli",
            "serve",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{tmp_path}/t.db",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_package_metadata_builds_without_deprecation_warnings() -> None:
    """A TOML-table ``project.license`` made every install print about 45 lines of setuptools
    deprecation warnings; an SPDX string (setuptools >= 77) prints none."""
    root = Path(__file__).resolve().parents[2]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert isinstance(meta["project"]["license"], str)
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])
