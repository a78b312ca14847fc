"""The suite's own rules: a hung test is stopped, and missing Chromium is a failure unless the
browser tests are skipped on purpose (the summary then says they did not run)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120


def pytest_run(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_every_test_has_a_default_timeout(pytestconfig: pytest.Config) -> None:
    assert 0 < float(pytestconfig.getini("timeout")) <= 300
    assert pytestconfig.getini("timeout_method") == "thread"


def test_a_hung_test_is_stopped_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        "import time\n\ndef test_hangs():\n    time.sleep(600)\n"
    )
    done = pytest_run(
        "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2",
        str(tmp_path / "test_hang.py"), cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Timeout" in output and "test_hang.py" in output and "time.sleep(600)" in output


def test_missing_chromium_fails_the_browser_run_naming_the_install_command() -> None:
    done = pytest_run("tests/browser", "-q", LIVECHAT_TEST_CHROMIUM="/nonexistent/chromium")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "`sudo apt-get install -y chromium`" in output and "LIVECHAT_SKIP_BROWSER=1" in output
    assert " passed" not in output and " skipped" not in output


def test_skipping_browser_tests_is_an_explicit_opt_out_shown_in_the_summary() -> None:
    done = pytest_run(
        "tests/browser", "-q", LIVECHAT_TEST_CHROMIUM="/nonexistent", LIVECHAT_SKIP_BROWSER="1"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"NOT RUN: \d+ browser tests skipped because LIVECHAT_SKIP_BROWSER=1", output)
    # CI refuses the opt-out.
    done = pytest_run(
        "tests/browser",
        "-q",
        LIVECHAT_TEST_CHROMIUM="/nonexistent",
        LIVECHAT_SKIP_BROWSER="1",
        LIVECHAT_REQUIRE_BROWSER="1",
    )
    assert done.returncode == 1 and "skipping is refused" in done.stdout + done.stderr


def test_a_hung_browser_close_is_ended_by_killing_our_browser_processes() -> None:
    from tests.browser.conftest import bounded

    # Stands in for a Chromium that never exits: only our own descendants are matched.
    stuck = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "--fake-chromium"]
    )
    started = time.monotonic()
    try:
        with bounded("browser.close", timeout_s=0.5):
            stuck.wait(timeout=60)  # what a hung close() looks like: waiting on Chromium
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()
    assert stuck.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 30


def test_skipped_postgresql_tests_are_named_in_the_summary_with_the_reason() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = pytest_run(
        "tests/storage/test_commands.py",
        "-q",
        "-k",
        "migrate or into_postgresql",
        LIVECHAT_TEST_PG_URL=f"postgresql://postgres@127.0.0.1:{port}/test",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(
        rf"NOT RUN: 2 PostgreSQL tests skipped: PostgreSQL unreachable at 127.0.0.1:{port}", output
    ), output
    # The reason of a skip raised inside a trio test is kept, not a bare "Skipped".
    assert "python.py" not in output and ": Skipped\n" not in output
