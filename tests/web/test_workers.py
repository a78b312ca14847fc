"""``livechat serve --workers N`` and the cluster flags, run as users run them (subprocesses):
SQLite refuses to be clustered with status 2 and the reason; on PostgreSQL the parent starts N
workers on one port and restarts one that dies while the port keeps serving."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from storage.crypto import new_master_key_text
from tests.pg import pg_schema_url
from tests.redis_server import bus_prefix, redis_url_or_skip
from tests.web.client import Http
from tests.web.server import free_port

SERVE = [sys.executable, "-m", "web.cli", "serve"]


@pytest.mark.parametrize(
    "flags",
    [["--workers", "2", "--bus-url", "redis://127.0.0.1:6379/0"], ["--bus-url", "redis://x:1/0"]],
)
def test_sqlite_refuses_workers_and_bus_with_status_2_and_the_reason(
    tmp_path: Path, flags: list[str]
) -> None:
    done = subprocess.run(
        [*SERVE, "--database-url", f"sqlite:///{tmp_path}/x.db", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "need PostgreSQL" in done.stderr and "SQLite" in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was created


def test_workers_without_a_bus_are_refused_with_status_2() -> None:
    done = subprocess.run(
        [*SERVE, "--database-url", "postgresql://u@127.0.0.1:1/db", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers above 1 needs --bus-url" in done.stderr


async def _lines_until(stream: trio.abc.ReceiveStream, seen: list[str], pattern: str) -> str:
    """Read the server's stderr until a line matches; returns that line."""
    buffer = ""
    while True:
        for line in seen:
            if re.search(pattern, line):
                seen.remove(line)
                return line
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise AssertionError(f"server exited before {pattern!r}: {seen}")
        buffer += chunk.decode()
        *complete, buffer = buffer.split("\n")
        seen.extend(complete)


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving() -> None:
    port = free_port()
    redis_url = redis_url_or_skip()
    with pg_schema_url() as url:
        env = {
            **os.environ,
            "LIVECHAT_MASTER_KEY": new_master_key_text(),
            "LIVECHAT_BUS_PREFIX": bus_prefix(),
        }
        cmd = [
            *SERVE,
            "--port",
            str(port),
            "--database-url",
            url,
            "--workers",
            "2",
            "--bus-url",
            redis_url,
            "--node-id",
            "t-workers",
            "--no-demo",
        ]
        with trio.fail_after(90):
            proc = await trio.lowlevel.open_process(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
            )
            assert proc.stderr is not None
            seen: list[str] = []
            try:
                pids = {}
                for index in range(2):
                    line = await _lines_until(proc.stderr, seen, rf"worker {index} started \(pid")
                    assert f"node t-workers-w{index})" in line
                    line = await _lines_until(proc.stderr, seen, rf"worker {index} serving")
                    pids[index] = int(re.findall(r"pid (\d+)", line)[0])
                http = Http(f"http://127.0.0.1:{port}")
                assert (await http.get("/healthz")).status == 200
                os.kill(pids[1], signal.SIGKILL)
                await _lines_until(proc.stderr, seen, r"worker 1 exited with status -9")
                # while worker 1 is down and restarting, worker 0 answers on the same port
                for _ in range(20):
                    assert (await http.get("/healthz")).status == 200
                line = await _lines_until(proc.stderr, seen, r"worker 1 serving")
                new_pid = int(re.findall(r"pid (\d+)", line)[0])
                assert new_pid != pids[1]
                os.kill(pids[0], signal.SIGKILL)  # now only the restarted worker 1 serves
                await _lines_until(proc.stderr, seen, r"worker 0 exited")
                assert (await http.get("/healthz")).status == 200
                proc.send_signal(signal.SIGTERM)
                assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_killed_parent_takes_its_workers_with_it() -> None:
    """SIGKILL of the parent: its workers shut down by themselves, never left serving alone."""
    port = free_port()
    redis_url = redis_url_or_skip()
    with pg_schema_url() as url:
        env = {
            **os.environ,
            "LIVECHAT_MASTER_KEY": new_master_key_text(),
            "LIVECHAT_BUS_PREFIX": bus_prefix(),
        }
        cmd = [*SERVE, "--port", str(port), "--database-url", url, "--workers", "2"]
        cmd += ["--bus-url", redis_url, "--node-id", "t-orphans", "--no-demo"]
        with trio.fail_after(90):
            proc = await trio.lowlevel.open_process(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
            )
            assert proc.stderr is not None
            seen: list[str] = []
            pids: list[int] = []
            try:
                for index in range(2):
                    line = await _lines_until(proc.stderr, seen, rf"worker {index} serving")
                    pids.append(int(re.findall(r"pid (\d+)", line)[0]))
                proc.kill()
                await proc.wait()
                while any(_running(pid) for pid in pids):  # they drain, then exit
                    await trio.sleep(0.1)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                for pid in pids:
                    if _running(pid):
                        os.kill(pid, signal.SIGKILL)
