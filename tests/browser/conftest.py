"""Browser tests: Playwright (sync API) driving Debian's Chromium against the real server.

The server runs as a subprocess (``livechat serve``) on a free loopback port with a fresh SQLite
database; tests talk to it only as a browser (and, for setup, through the admin API).

Chromium missing: the run stops with one failure naming the command that installs it. Skipping
is an explicit opt-out, ``LIVECHAT_SKIP_BROWSER=1``, and the summary says the tests did not run;
CI sets ``LIVECHAT_REQUIRE_BROWSER=1``, which refuses the opt-out.

Teardown is bounded: closing a context or the browser, and stopping the Playwright driver and
the server, each get a deadline after which our own Chromium/driver processes are killed.

Tests here are plain synchronous functions: pytest runs in trio mode, and Playwright's sync API
brings its own event loop.
"""

from __future__ import annotations

import contextlib
import gzip
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The variable exists so the suite's own tests can pretend Chromium is missing.
CHROMIUM = Path(os.environ.get("LIVECHAT_TEST_CHROMIUM", "/usr/bin/chromium"))
INSTALL_CHROMIUM = "sudo apt-get install -y chromium"
SKIP_ENV = "LIVECHAT_SKIP_BROWSER"
REQUIRE_ENV = "LIVECHAT_REQUIRE_BROWSER"
CLOSE_TIMEOUT_S = 20.0  # context.close / browser.close / the driver's exit
SERVER_STOP_TIMEOUT_S = 20.0  # SIGTERM, then SIGKILL
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SERVER_START_TIMEOUT_S = 60.0
WIDGET_FILES = (
    "/widget.js",
    "/widget/frame.html",
    "/widget/frame.js",
    "/widget/state.js",
    "/widget/log.js",
    "/widget/forms.js",
    "/widget/client.js",
    "/widget/files.js",
    "/widget/departments.js",
    "/widget/invite.js",
    "/widget/greeting.js",
    "/widget/widget.css",
)

_summary: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    browser = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in browser:
        item.add_marker(pytest.mark.browser)
    if not browser or len(browser) != len(items):
        return  # none here, or a mixed session: tests/conftest.py defers them to their own run
    if _opted_out():
        skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: browser tests skipped on request")
        for item in browser:
            item.add_marker(skip)
        record_summary(
            "NOT RUN",
            f"{len(browser)} browser tests skipped because {SKIP_ENV}=1; unset it to run them",
        )
        return
    if not CHROMIUM.exists():
        pytest.exit(chromium_missing(), returncode=pytest.ExitCode.TESTS_FAILED)


def _opted_out() -> bool:
    return os.environ.get(SKIP_ENV) == "1" and os.environ.get(REQUIRE_ENV) != "1"


def chromium_missing() -> str:
    text = (
        f"browser tests need Chromium at {CHROMIUM}: install it with `{INSTALL_CHROMIUM}`"
        f" (Debian/Ubuntu), or skip them on purpose with {SKIP_ENV}=1"
    )
    if os.environ.get(SKIP_ENV) == "1":
        text += f" ({REQUIRE_ENV}=1 is set, so skipping is refused)"
    return text


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, screenshot every page still open (a failed test leaves its visitor
    contexts open) into test-artifacts/failures/, so a flake can be diagnosed afterwards."""
    report = yield
    browser = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and browser is not None:
        out = ARTIFACTS / "failures"
        out.mkdir(parents=True, exist_ok=True)
        pages = [page for context in browser.contexts for page in context.pages]
        for n, page in enumerate(pages):
            with contextlib.suppress(Exception):  # best effort: the report matters more
                page.screenshot(path=str(out / f"{item.name}-{n}.png"), timeout=5_000)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _summary:
        terminalreporter.section("livechat browser tests")
        for key, value in _summary.items():
            terminalreporter.write_line(f"{key}: {value}")


def record_summary(key: str, value: str) -> None:
    _summary[key] = value


def _require_chromium() -> None:
    if not CHROMIUM.exists():  # normally caught at collection; here if it vanished meanwhile
        pytest.fail(chromium_missing(), pytrace=False)


# ---------------------------------------------------------------- bounded teardown


def _our_processes(match: tuple[str, ...]) -> list[int]:
    """Descendants of this pytest process whose command line mentions one of ``match``."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
    ours: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - ours
        ours |= frontier
    return sorted(pid for pid in ours if any(m in commands.get(pid, "") for m in match))


def kill_browser_processes() -> list[int]:
    """SIGKILL the Chromium and Playwright-driver processes this pytest process started."""
    pids = _our_processes(("chromium", "playwright"))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@contextlib.contextmanager
def bounded(what: str, timeout_s: float = CLOSE_TIMEOUT_S) -> Iterator[None]:
    """Run the block; if it has not finished after ``timeout_s``, kill our browser processes.

    Playwright's ``close()`` takes no timeout and its sync API cannot be called from another
    thread; killing Chromium and the driver makes the hung call return (or raise) at once.
    """
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(timeout_s):
            pids = kill_browser_processes()
            print(f"\n{what} took over {timeout_s} s: killed {pids}", file=sys.stderr)

    guard = threading.Thread(target=watchdog, name=f"bounded {what}", daemon=True)
    guard.start()
    try:
        yield
    finally:
        done.set()
        guard.join()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- admin API client


class Api:
    """A tiny cookie-session client for the admin API (setup and assertions only)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + "/api/v1" + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.csrf and method not in ("GET", "HEAD"):
            req.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(req, timeout=15) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read().decode()}") from err
        return json.loads(text) if text else None

    def login(self, username: str, password: str) -> dict[str, Any]:
        me: dict[str, Any] = self.call(
            "POST", "/auth/login", {"username": username, "password": password}
        )
        self.csrf = me["csrf_token"]
        return me


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, tmp: Path, *, env: dict[str, str] | None = None) -> None:
        self.extra_env = dict(env or {})  # LIVECHAT_* settings of this server (e.g. SMTP)
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "livechat.db"
        self.log_path = tmp / "server.log"
        self.lines: list[str] = []
        self.output = threading.Condition()  # notified for each line the server prints
        self.proc: subprocess.Popen[str] | None = None
        self.owner_username = ""
        self.owner_password = ""
        self.widget_key = ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
        # Every test visitor comes from 127.0.0.1: lift the per-IP new-chat limit (10/hour).
        env["LIVECHAT_RATE_NEW_CONVERSATIONS_PER_HOUR"] = "1000"
        # As in tests/web/server.py: a loaded CI machine must not make the server shed chat
        # messages at random (the overload policy has its own tests).
        env["LIVECHAT_OVERLOAD_LOOP_LAG_S"] = "0"
        # The SSO tests' OpenID provider is a plain-http server on loopback (tests/oidc_provider).
        env["LIVECHAT_SSO_ALLOW_HTTP_LOOPBACK"] = "1"
        env.update(self.extra_env)
        # The webhook screen's test delivers to a receiver on 127.0.0.1.
        env["LIVECHAT_WEBHOOKS_ALLOW_PRIVATE_TARGETS"] = "1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "web.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                f"sqlite:///{self.db}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        # Hypercorn says "Running on" once it listens; the first start then prints the logins.
        if self._wait_for_output(r"Running on http", deadline) is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-60:]))
        with urllib.request.urlopen(self.base_url + "/healthz", timeout=10) as resp:
            assert resp.status == 200
        self._read_credentials(deadline)

    def _wait_for_output(self, pattern: str, deadline: float) -> re.Match[str] | None:
        """The first match of ``pattern`` in the server's output, waiting until ``deadline``
        (or the server's exit) for it to be printed."""
        with self.output:
            while True:
                found = re.search(pattern, "\n".join(self.lines))
                left = deadline - time.monotonic()
                if found or left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    return found
                self.output.wait(timeout=min(left, 1.0))  # 1 s: also notice an exit

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.proc.stdout:
                with self.output:
                    self.lines.append(line.rstrip("\n"))
                    self.output.notify_all()
                log.write(line)
                log.flush()

    def _read_credentials(self, deadline: float) -> None:
        """The first start prints the demo workspace's owner login and widget key."""
        owner = self._wait_for_output(r"owner: username '([^']+)' password '([^']+)'", deadline)
        if owner is None:
            raise RuntimeError("no demo credentials printed:\n" + "\n".join(self.lines[-60:]))
        self.owner_username, self.owner_password = owner.group(1), owner.group(2)
        key = re.search(r"widget key ([A-Za-z0-9_-]+)", "\n".join(self.lines))
        if key:
            self.widget_key = key.group(1)
        if not self.widget_key:
            api = self.api()
            self.widget_key = api.call("GET", "/me")["workspace"]["widget_key"]

    def api(self) -> Api:
        api = Api(self.base_url)
        api.login(self.owner_username, self.owner_password)
        return api

    def stop(self) -> None:
        """SIGTERM (graceful drain), then SIGKILL after ``SERVER_STOP_TIMEOUT_S``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_chromium()
    srv = Server(tmp_path_factory.mktemp("browser-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.helpers import TIMEOUT_MS

    # Assertions wait for the page; Playwright's 5 s default is too short on a loaded CI machine.
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            with _bounded_context_close():
                yield b
        finally:
            with bounded("browser.close"), contextlib.suppress(Exception):
                b.close()
    finally:
        with bounded("stopping Playwright"), contextlib.suppress(Exception):
            playwright.stop()


@contextlib.contextmanager
def _bounded_context_close() -> Iterator[None]:
    """Every ``BrowserContext.close()`` in the tests, and after a failure the contexts a test
    left open, finish within ``CLOSE_TIMEOUT_S``."""
    from playwright.sync_api import BrowserContext

    original = BrowserContext.close

    def close(self: BrowserContext, *args: Any, **kwargs: Any) -> None:
        with bounded("context.close"):
            original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BrowserContext, "close", close)
        yield


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


_agent_counter = iter(range(1, 10_000))


def make_agent(server: Server, *, role: str = "agent", name: str | None = None) -> dict[str, str]:
    """A fresh agent (unique username) with a known password, through the admin API."""
    n = next(_agent_counter)
    username = f"agent{n}x{int(time.time() * 1000) % 100000}"
    password = f"pw-{username}-long-enough"
    api = server.api()
    res = api.call(
        "POST",
        "/agents",
        {
            "username": username,
            "display_name": name or f"Agent {n}",
            "role": role,
            "password": password,
            "max_chats": 20,
        },
    )
    return {
        "id": res["agent"]["id"],
        "username": username,
        "password": password,
        "display_name": res["agent"]["display_name"],
    }


def gzipped_widget_size(server: Server) -> tuple[int, int]:
    """(raw, gzipped) bytes of everything a visitor downloads for the widget."""
    raw = b""
    for path in WIDGET_FILES:
        with urllib.request.urlopen(server.base_url + path, timeout=10) as resp:
            raw += resp.read()
    return len(raw), sum(
        len(gzip.compress(_fetch(server, p), compresslevel=9)) for p in WIDGET_FILES
    )


def _fetch(server: Server, path: str) -> bytes:
    with urllib.request.urlopen(server.base_url + path, timeout=10) as resp:
        data: bytes = resp.read()
        return data


@pytest.fixture(autouse=True)
def _close_chats_after_test(server: Server) -> Iterator[None]:
    """Close every open chat after a test: otherwise, once a closed console's grace period
    ends, its chats would be re-routed into the next test's console."""
    yield
    api = server.api()
    for state in ("active", "queued"):
        page = api.call("GET", f"/conversations?state={state}&limit=200")
        for conv in page["conversations"]:
            with contextlib.suppress(AssertionError):  # closed meanwhile
                api.call("POST", f"/conversations/{conv['id']}/close", {"tags": []})
