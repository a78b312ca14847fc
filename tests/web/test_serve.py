"""``livechat serve`` as users run it: first-start seeding, printed credentials, graceful
shutdown on SIGTERM that closes sockets with 1001; and the ``livechat admin`` commands."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from hypercorn.logging import Logger as HypercornLogger

from storage.crypto import new_master_key_text
from tests.web.client import Http, open_peer
from tests.web.server import free_port, test_settings
from web.server import configure_logging, hypercorn_config


async def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    assert proc.stdout is not None
    seen = ""
    with trio.fail_after(timeout):
        while not re.search(pattern, seen):
            # abandon_on_cancel: a silent server must not outlast fail_after (the finally
            # blocks kill it, which ends the abandoned readline).
            line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
            if not line and proc.poll() is not None:
                raise AssertionError(f"server exited: {seen}")
            seen += line
    return seen


async def test_first_start_prints_random_credentials_and_sigterm_closes_sockets_with_1001(
    tmp_path: Path,
) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "web.cli",
        "serve",
        "--port",
        str(port),
        "--database-url",
        f"sqlite:///{tmp_path}/live.db",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = await _read_until(proc, r"Log in at", timeout=60)
        owner_pw = re.search(r"owner: username 'owner' password '([^']+)'", banner)
        agent_pw = re.search(r"agent: username 'agent' password '([^']+)'", banner)
        assert owner_pw and agent_pw and owner_pw.group(1) != agent_pw.group(1)
        for url in ("/demo", "/console", "/api/docs"):
            assert url in banner
        base = f"http://127.0.0.1:{port}"
        http = Http(base)
        with trio.fail_after(30):
            while True:
                try:
                    resp = await http.login("agent", agent_pw.group(1))
                    break
                except OSError:
                    await trio.sleep(0.2)
        assert resp.status == 200
        # The demo workspace has something on every screen: groups, canned responses, tags.
        groups = (await http.get("/api/v1/groups")).json()["groups"]
        assert sorted(g["name"] for g in groups) == ["Sales", "Support"]
        canned = (await http.get("/api/v1/canned-responses")).json()["canned_responses"]
        assert {"hello", "refund"} <= {c["shortcut"] for c in canned}
        assert "billing" in (await http.get("/api/v1/tags")).json()["tags"]
        me = (await http.get("/api/v1/me")).json()
        assert len(me["agent"]["group_ids"]) == 2
        async with open_peer(f"ws://127.0.0.1:{port}/ws/v1/agent", cookie=http.cookie) as peer:
            assert (await peer.request("auth", token=None))["type"] == "result"
            proc.send_signal(signal.SIGTERM)
            assert await peer.closed(timeout=15) == 1001
        status = await trio.to_thread.run_sync(lambda: proc.wait(30))
        assert status == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # A second start finds the workspace: no new accounts, no passwords printed.
    proc = subprocess.Popen(
        [*cmd[:5], str(free_port()), *cmd[6:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = await _read_until(proc, r"admin API", timeout=60)
        proc.send_signal(signal.SIGINT)
        rest, _ = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
        assert "password" not in banner + rest
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_start_up_prints_hypercorns_running_on_once(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "web.cli", "serve", "--port", str(port)]
    cmd += ["--database-url", f"sqlite:///{tmp_path}/once.db"]
    # A master key given by setting: a generated one is announced with a (deliberate) warning
    # to back it up, which is not start-up noise.
    env = {**os.environ, "LIVECHAT_MASTER_KEY": new_master_key_text()}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        seen = await _read_until(proc, r"Running on", timeout=60)
        # Serving requests: every start-up line (both handlers of that log call) is written.
        with trio.fail_after(30):
            assert (await Http(f"http://127.0.0.1:{port}").get("/healthz")).status == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = await trio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
        output = seen + rest
        assert output.count("Running on") == 1, output
        assert "Warning" not in output and "warning" not in output.lower(), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_hypercorn_lines_go_through_our_handler_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    hyper = logging.getLogger("hypercorn.error")
    saved_hyper = hyper.handlers[:], hyper.propagate
    try:
        configure_logging("info")
        hypercorn_log = HypercornLogger(hypercorn_config(test_settings(tmp_path)))
        await hypercorn_log.info("Running on http://127.0.0.1:1 (CTRL + C to quit)")
        err = capfd.readouterr().err
        assert err.count("Running on") == 1, err
        assert "INFO hypercorn.error Running on" in err  # our format, with the logger's name
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        hyper.handlers[:], hyper.propagate = saved_hyper


def test_admin_commands_create_workspace_agent_token_and_reset(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/admin.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "web.cli", "admin", *args, "--database-url", db],
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = run(
        "create-workspace",
        "--name",
        "Shop",
        "--owner-username",
        "Shop-Owner",
        "--allowed-origin",
        "https://shop.example",
    )
    assert created.returncode == 0, created.stderr
    workspace_id = re.search(r"workspace (\S+)", created.stdout)
    assert workspace_id
    assert "shown once" in created.stdout
    agent = run(
        "create-agent",
        "--workspace",
        workspace_id.group(1),
        "--username",
        "dora",
        "--role",
        "supervisor",
    )
    assert agent.returncode == 0 and "dora" in agent.stdout
    assert (
        run("create-agent", "--workspace", workspace_id.group(1), "--username", "dora").returncode
        == 1
    )
    token = run("create-token", "--username", "shop-owner", "--scope", "read")
    assert token.returncode == 0 and "lct_" in token.stdout
    reset = run("reset-password", "--username", "dora")
    assert reset.returncode == 0 and "new password" in reset.stdout
    missing = run("reset-password", "--username", "nobody")
    assert missing.returncode == 1 and "no account" in missing.stderr
