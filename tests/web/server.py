"""Start the real livechat server for tests, benches and browser checks.

The server is the production one: ``open_services`` (SQLite in a fresh directory, the engine),
``create_app`` and Hypercorn on a free loopback port. Two workspaces are seeded so isolation can
be tested: **Acme** (``srv.acme``; it is the server operator's workspace) and **Globex**
(``srv.globex``). Each has an owner, and Acme also a supervisor and agents ``alice`` and
``bob``; every account has a random password and an admin-scope API token.

In-process, from a pytest-trio test (``services`` gives direct access to storage/engine)::

    from tests.web.server import run_test_server

    async def test_something(tmp_path):
        async with run_test_server(tmp_path, ws_ping_interval_s=1.0) as srv:
            srv.base_url                      # "http://127.0.0.1:PORT"
            srv.visitor_ws_url(srv.acme.widget_key)
            srv.agent_ws_url                  # "ws://127.0.0.1:PORT/ws/v1/agent"
            srv.acme.owner.token              # "Authorization: Bearer <token>"
            srv.acme.agents[0].username, srv.acme.agents[0].password
            srv.acme.site_origin              # an allowed widget Origin ("http://site.test")

As a subprocess, from synchronous code (Playwright, bench)::

    from tests.web.server import server_process

    with server_process(tmp_path) as info:   # info: the same fields, as a dict
        info["base_url"], info["acme"]["owner"]["password"]

or by hand: ``python -m tests.web.server --dir /tmp/x [--port 8123] [--set key=value ...]``
prints one JSON line with everything above, then serves until SIGTERM/SIGINT (1001 to sockets).
Keyword overrides (``--set``) are settings, ``section.key`` or a flat name (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from hypercorn.trio import serve

from storage import Role
from web.app import create_app
from web.auth import SERVER_OPERATOR_KEY, hash_secret, new_secret
from web.passwords import generate_password
from web.server import drain, hypercorn_config
from web.services import Services, open_services
from web.settings import Settings, load_settings

SITE_ORIGIN = "http://site.test"
OTHER_SITE_ORIGIN = "http://globex.test"
TEST_MASTER_KEY = "dGVzdC1vbmx5IG1hc3RlciBrZXksIDMyIGJ5dGVzISE"  # 32 bytes, base64
STOP_TIMEOUT_S = 20.0  # server_process: SIGTERM, then SIGKILL after this


@attrs.frozen(kw_only=True)
class Account:
    id: str
    username: str
    password: str
    role: str
    token: str  # admin-scope API token acting as this account


@attrs.frozen(kw_only=True)
class SeededWorkspace:
    id: str
    name: str
    widget_key: str
    identity_secret: str
    site_origin: str
    owner: Account
    supervisor: Account | None
    agents: tuple[Account, ...]


@attrs.frozen(kw_only=True)
class TestServer:
    __test__ = False  # not a pytest test class

    base_url: str
    ws_base: str
    agent_ws_url: str
    database_url: str
    acme: SeededWorkspace
    globex: SeededWorkspace
    services: Services | None = attrs.field(default=None, repr=False)

    def visitor_ws_url(self, widget_key: str) -> str:
        return f"{self.ws_base}/ws/v1/visitor?key={widget_key}"

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, filter=lambda a, _v: a.name != "services")
        data["acme_visitor_ws_url"] = self.visitor_ws_url(self.acme.widget_key)
        data["globex_visitor_ws_url"] = self.visitor_ws_url(self.globex.widget_key)
        return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _account(
    services: Services, workspace_id: str, username: str, role: Role, display: str
) -> Account:
    storage = services.storage
    password = generate_password()
    agent = await storage.create_agent(
        workspace_id,
        username=username,
        display_name=display,
        password_hash=await services.hasher.hash(password),
        role=role,
    )
    token = "lct_" + new_secret()
    await storage.create_api_token(
        workspace_id,
        agent_id=agent.id,
        name=f"test token {username}",
        token_hash=hash_secret(token),
        scopes=("admin",),
    )
    return Account(id=agent.id, username=username, password=password, role=role.value, token=token)


async def seed(services: Services) -> tuple[SeededWorkspace, SeededWorkspace]:
    """Two workspaces with accounts; Acme is the server operator's workspace."""
    storage = services.storage
    out = []
    for name, origin, operator in (
        ("Acme", SITE_ORIGIN, True),
        ("Globex", OTHER_SITE_ORIGIN, False),
    ):
        ws = await storage.create_workspace(
            name=name,
            allowed_origins=(origin,),
            settings={SERVER_OPERATOR_KEY: operator},
        )
        low = name.lower()
        owner = await _account(services, ws.id, f"{low}-owner", Role.OWNER, f"{name} Owner")
        supervisor = None
        agents: list[Account] = []
        if operator:
            supervisor = await _account(
                services, ws.id, f"{low}-super", Role.SUPERVISOR, "Sam Supervisor"
            )
            agents.append(await _account(services, ws.id, "alice", Role.AGENT, "Alice"))
            agents.append(await _account(services, ws.id, "bob", Role.AGENT, "Bob"))
        else:
            agents.append(await _account(services, ws.id, "gina", Role.AGENT, "Gina"))
        out.append(
            SeededWorkspace(
                id=ws.id,
                name=name,
                widget_key=ws.widget_key,
                identity_secret=ws.identity_secret,
                site_origin=origin,
                owner=owner,
                supervisor=supervisor,
                agents=tuple(agents),
            )
        )
    return out[0], out[1]


def test_settings(directory: Path | str, *, port: int | None = None, **overrides: Any) -> Settings:
    directory = Path(directory)
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port or free_port(),
        "database_url": f"sqlite:///{directory / 'livechat.db'}",
        "secret_key": "test-secret-key",
        "demo": False,
        "backup_dir": str(directory / "backups"),
        "shutdown_grace_s": 3.0,
        "engine_shutdown_deadline_s": 3.0,
        # A loaded test machine stalls the event loop now and then: tests opt in to shedding
        # on loop lag (tests/web/test_overload.py), so their sends are not refused at random.
        "overload_loop_lag_s": 0.0,
    }
    values.update(overrides)
    if str(values["database_url"]).startswith("postgres") and "master_key" not in values:
        values["master_key"] = TEST_MASTER_KEY  # PostgreSQL needs one (SQLite generates one)
    return load_settings(values, environ={})


test_settings.__test__ = False  # type: ignore[attr-defined]


@asynccontextmanager
async def run_test_server(
    directory: Path | str,
    *,
    port: int | None = None,
    seeded: tuple[SeededWorkspace, SeededWorkspace] | None = None,
    **overrides: Any,
) -> AsyncIterator[TestServer]:
    """Serve the real app on loopback until the block exits (then a graceful shutdown).

    ``seeded``: the workspaces of an earlier server on the same ``directory`` (a restart);
    otherwise the database is seeded afresh."""
    settings = test_settings(directory, port=port, **overrides)
    async with open_services(settings) as services:
        acme, globex = seeded if seeded is not None else await seed(services)
        app = create_app(settings, services)
        stop = trio.Event()

        async def trigger() -> None:
            await stop.wait()
            await drain(services)

        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve, app, hypercorn_config(settings), shutdown_trigger=trigger)
            )
            base = settings.server.base_url
            try:
                yield TestServer(
                    base_url=base,
                    ws_base="ws" + base[len("http") :],
                    agent_ws_url="ws" + base[len("http") :] + "/ws/v1/agent",
                    database_url=settings.storage.database_url,
                    acme=acme,
                    globex=globex,
                    services=services,
                )
            finally:
                stop.set()


@contextmanager
def server_process(
    directory: Path | str, *, port: int | None = None, timeout_s: float = 60.0, **overrides: Any
) -> Iterator[dict[str, Any]]:
    """Run ``python -m tests.web.server`` and yield its JSON description; SIGTERM on exit."""
    cmd = [sys.executable, "-m", "tests.web.server", "--dir", str(directory)]
    if port:
        cmd += ["--port", str(port)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # readline cannot time out: a thread reads, the caller waits bounded
        assert proc.stdout is not None
        for text in proc.stdout:
            lines.put(text)
        lines.put("")  # EOF: the process exited

    threading.Thread(target=pump, name="server_process stdout", daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while not line.startswith("{"):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
        if not line.startswith("{"):
            raise RuntimeError(f"test server did not start in {timeout_s} s (exit {proc.poll()})")
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


async def _main(directory: str, port: int | None, overrides: dict[str, Any]) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with run_test_server(directory, port=port, **overrides) as srv:
            print(json.dumps(srv.to_json()), flush=True)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a seeded livechat test server.")
    parser.add_argument("--dir", required=True, help="directory for the database")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    trio.run(_main, args.dir, args.port, overrides)


if __name__ == "__main__":
    main()
