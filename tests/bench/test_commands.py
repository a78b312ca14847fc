"""``livechat bench``: the subcommands exist, write their outputs, and say when one is missing."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import commands

HANG_GUARD_S = 300.0  # a bench subprocess that runs longer is hung, not slow


def test_bench_help_lists_every_bench() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "web.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("e2e", "connections", "routing", "storage", "all"):
        assert name in out


def test_each_bench_accepts_json_and_report_options() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "e2e", "--json", "x.json", "--report", "out"])
    assert (args.json, args.report) == ("x.json", "out")
    args = parser.parse_args(["bench", "all", "--quick"])
    assert args.quick is True


def test_a_missing_bench_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(commands.BENCHES, "ghost", ("bench.ghost_bench", "not written yet"))
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "ghost"])

    assert args.handler(args) == commands.EXIT_UNAVAILABLE
    assert "bench.ghost_bench is not present yet" in capsys.readouterr().err


@pytest.mark.timeout(HANG_GUARD_S + 60)  # its own bound is the subprocess's HANG_GUARD_S
def test_cli_e2e_run_against_the_relay_writes_json_and_html(tmp_path: Path) -> None:
    json_path = tmp_path / "out.json"
    report = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable, "-m", "web.cli", "bench", "e2e", "--target", "relay",
            "--pairs", "3", "--rate", "60", "--duration", "1", "--closed-duration", "1",
            "--drain", "30", "--json", str(json_path), "--report", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "relay: closed loop" in done.stderr  # the progress bar
    data = json.loads(json_path.read_text())
    assert data["bench"] == "e2e"
    assert data["lost"] == data["duplicates"] == 0
    assert (report / "index.html").exists()


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_interrupt_stops_the_run_its_server_and_load_generator() -> None:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "web.cli", "bench", "e2e", "--target", "relay",
            "--pairs", "2", "--rate", "10", "--duration", "60", "--closed-duration", "1",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    guard = threading.Timer(HANG_GUARD_S, proc.kill)  # never block the suite on a hung run
    guard.start()
    try:
        for line in proc.stderr:  # the progress bar says when the load is running
            if "open loop" in line:
                break
    finally:
        guard.cancel()
    assert proc.poll() is None, "the bench ended before its open loop started"
    children = _children_of(proc.pid)
    assert len(children) >= 2  # the relay and one load generator

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == commands.EXIT_INTERRUPTED
    assert "interrupted" in proc.stderr.read()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
