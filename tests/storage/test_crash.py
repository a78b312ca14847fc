"""SIGKILL a process appending under load, many times: nothing acknowledged is ever lost.

After each kill the database must hold every acknowledged append exactly once, with gapless
sequences per conversation, and pass SQLite's integrity checks.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage import open_storage

KILLS = 20
ACKS_BEFORE_KILL = 11  # each run is killed only after this many acknowledged appends
ACK_WAIT_S = 60.0  # generous: a loaded machine starts the child and appends slowly
TIME_BOUND_S = 600.0  # a runaway guard, not a speed assertion
ROOT = Path(__file__).resolve().parents[2]


async def _setup(url: str) -> tuple[str, list[str]]:
    async with open_storage(url) as storage:
        workspace = await storage.create_workspace(name="crash")
        visitor = await storage.create_visitor(workspace.id, token_hash=None)
        conversations = [
            await storage.create_conversation(workspace.id, visitor_id=visitor.id) for _ in range(4)
        ]
    return workspace.id, [c.id for c in conversations]


def _run_and_kill(url: str, run: int, workspace_id: str, conversations: list[str]) -> list[str]:
    """Start the child, let it ack some appends, SIGKILL it; the complete lines it printed."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.storage.crash_child",
            url,
            str(run),
            workspace_id,
            *conversations,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: list[str] = []
    enough_acks = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            if raw.endswith(b"\n"):
                lines.append(raw.decode())
                if len(lines) >= ACKS_BEFORE_KILL:
                    enough_acks.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        acked = enough_acks.wait(ACK_WAIT_S)
        if acked:
            time.sleep(random.uniform(0.0, 0.3))  # then a random instant, mid-append
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
        reader.join(10)
    if not acked:  # stderr is read only now: the child is dead, so this cannot block
        assert child.stderr is not None
        raise AssertionError(
            f"child acknowledged {len(lines)} appends in {ACK_WAIT_S} s: {child.stderr.read()!r}"
        )
    return lines


def _check(path: str, acknowledged: dict[str, tuple[str, int]], conversations: list[str]) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")
        stored: dict[str, tuple[str, int]] = {}
        for conv, seq, cmid in db.execute("SELECT conversation_id, seq, client_msg_id FROM events"):
            assert cmid not in stored, f"duplicate client_msg_id {cmid}"
            stored[cmid] = (conv, seq)
        missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
        assert not missing, f"{len(missing)} acknowledged appends lost or changed"
        for conv in conversations:
            (count, top, last_seq) = db.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0),"
                " (SELECT last_seq FROM conversations WHERE id = ?)"
                " FROM events WHERE conversation_id = ?",
                (conv, conv),
            ).fetchone()
            assert count == top == last_seq, f"gap in {conv}: {count} events, max seq {top}"
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.timeout(TIME_BOUND_S + 60)  # its own runaway guard is TIME_BOUND_S
async def test_sigkill_under_load_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    import trio

    path = str(tmp_path / "crash.db")
    url = f"sqlite:///{path}"
    workspace_id, conversations = await _setup(url)
    acknowledged: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + TIME_BOUND_S
    for run in range(KILLS):
        lines = await trio.to_thread.run_sync(_run_and_kill, url, run, workspace_id, conversations)
        for line in lines:
            conv, seq, cmid = line.split()
            acknowledged[cmid] = (conv, int(seq))
        await trio.to_thread.run_sync(_check, path, acknowledged, conversations)
        assert time.monotonic() < deadline, "crash test exceeded its time bound"
    assert len(acknowledged) >= KILLS * ACKS_BEFORE_KILL
    # The storage reopens cleanly after the last kill and keeps counting.
    async with open_storage(url) as storage:
        conv = await storage.get_conversation(workspace_id, conversations[0])
        assert conv is not None and conv.last_seq >= 1
