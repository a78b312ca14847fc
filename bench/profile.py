"""Where the server spends its time: a py-spy sample of the hot path, summarised for the report.

py-spy is the ``bench`` extra, not a dependency of the server: install it for a measurement
(``pip install -e .[bench]``) and pass ``--profile``. ``record`` samples a running process from the
outside (no code change, no restart) into py-spy's "raw" collapsed-stack format; ``summarize``
turns that into the functions with the most samples, on the CPU itself ("self") and below them
("inclusive"), which is what the report and ``docs/benchmarks.md`` show.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

SAMPLE_RATE_HZ = 200
TOP = 20


def find_py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH; None when it is not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _argv(exe: str, pid: int, out_path: Path, duration_s: float | None) -> list[str]:
    argv = [exe, "record", "--pid", str(pid)]
    if duration_s is not None:
        argv += ["--duration", str(max(1, int(duration_s)))]
    argv += ["--rate", str(SAMPLE_RATE_HZ), "--format", "raw", "--nonblocking"]
    return [*argv, "--output", str(out_path)]


async def record(pid: int, duration_s: float, out_path: Path) -> str | None:
    """Sample ``pid`` for ``duration_s``; returns a note when it could not (None on success)."""
    exe = find_py_spy()
    if exe is None:
        return "py-spy is not installed: `pip install -e .[bench]` to profile"
    argv = _argv(exe, pid, out_path, duration_s)
    with trio.move_on_after(duration_s + 30):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0 or not await trio.Path(out_path).exists():
            err = done.stderr.decode(errors="replace").strip().splitlines()
            return f"py-spy failed ({done.returncode}): {err[-1] if err else 'no output'}"
        return None
    return "py-spy did not finish in time"


class Sampling:
    """py-spy sampling ``pid`` until ``stop`` (for a phase whose length is not known in
    advance): py-spy writes its output when interrupted. ``note`` says why there is none."""

    def __init__(self, pid: int, out_path: Path) -> None:
        self.pid = pid
        self.out_path = out_path
        self.note: str | None = None
        self._process: trio.Process | None = None

    async def start(self) -> None:
        exe = find_py_spy()
        if exe is None:
            self.note = "py-spy is not installed: `pip install -e .[bench]` to profile"
            return
        self._process = await trio.lowlevel.open_process(
            _argv(exe, self.pid, self.out_path, None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def stop(self) -> dict[str, Any] | None:
        """Interrupt py-spy, wait (bounded) for its output; the summary, or None (``note``)."""
        process = self._process
        if process is None:
            return None
        process.send_signal(signal.SIGINT)
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()
            self.note = "py-spy did not finish in time"
            return None
        if not self.out_path.exists():
            self.note = f"py-spy failed ({process.returncode}): no output"
            return None
        return summarize(self.out_path)


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    module = where.split(":", 1)[0].rsplit("/", 1)[-1] if where else ""
    return f"{name} ({module})" if module else name


def summarize(raw_path: Path, *, top: int = TOP) -> dict[str, Any]:
    """Top functions by share of samples: ``self`` (on CPU) and ``inclusive`` (on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        names = [_frame_name(f) for f in stack.split(";")]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    if total == 0:
        return {"tool": "py-spy", "samples": 0, "self": [], "inclusive": []}

    def table(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[round(100 * n / total, 1), name] for name, n in counter.most_common(top)]

    return {
        "tool": "py-spy",
        "rate_hz": SAMPLE_RATE_HZ,
        "samples": total,
        "self": table(own),
        "inclusive": table(inclusive),
    }
