"""What every bench shares: the machine description, percentiles, a progress bar, JSON output.

Each bench returns a ``BenchResult``; ``bench.report.write_outputs`` writes ``--json PATH`` and
``--report DIR``.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs


@attrs.define(kw_only=True)
class BenchResult:
    name: str
    parameters: dict[str, Any]
    results: dict[str, Any]
    ceiling: dict[str, Any] = attrs.field(factory=dict)
    ratio_to_ceiling: float | None = None
    notes: list[str] = attrs.field(factory=list)
    series: dict[str, list[Any]] = attrs.field(factory=dict)  # for plots (time series, samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.name,
            "machine": machine_info(),
            "versions": versions(),
            "parameters": self.parameters,
            "results": self.results,
            "ceiling": self.ceiling,
            "ratio_to_ceiling": self.ratio_to_ceiling,
            "notes": self.notes,
            **{k: v for k, v in self.results.items() if isinstance(v, (int, float, str))},
        }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "hostname": platform.node(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _git_commit(),
    }


def versions() -> dict[str, str]:
    names = ("trio", "trio-websocket", "hypercorn", "quart-trio", "quart", "asyncpg", "cattrs")
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["sqlite"] = __import__("sqlite3").sqlite_version
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of an ascending sequence, nearest-rank; None when empty."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


def latency_summary_ms(samples_s: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(samples_s)
    return {
        f"{name}_ms": (None if (v := percentile(ordered, q)) is None else round(v * 1000, 3))
        for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))
    }


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Progress:
    """A one-line progress bar on stderr (a TTY) or sparse lines (a pipe)."""

    def __init__(self, label: str, total: float, *, stream: Any = None) -> None:
        self.label = label
        self.total = max(total, 1e-9)
        self.stream = stream or sys.stderr
        self._last_print = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: float, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last_print < (0.1 if self._tty else 2.0) and done < self.total:
            return
        self._last_print = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        line = f"{self.label:<18} [{bar:<30}] {frac * 100:5.1f}% {extra}"
        if self._tty:
            self.stream.write("\r" + line)
            if frac >= 1.0:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def cdf_points(samples: Sequence[float], *, max_points: int = 400) -> list[list[float]]:
    """A compact empirical CDF: ``[[value, fraction], ...]`` with the tail kept exactly.

    Evenly spaced ranks for the body, then every rank past the 99th percentile up to
    ``max_points // 4`` points, so p99/p999 are visible on the chart without shipping every sample.
    """
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        return []
    ranks = {round(i * (n - 1) / max(1, max_points - 1)) for i in range(max_points)}
    tail_start = int(0.99 * (n - 1))
    step = max(1, (n - tail_start) // max(1, max_points // 4))
    ranks.update(range(tail_start, n, step))
    ranks.add(n - 1)
    return [[float(ordered[r]), (r + 1) / n] for r in sorted(ranks)]


def rate_points(counts: Sequence[int], bin_s: float) -> list[list[float]]:
    """Per-bin counts as ``[[t_s, per_second], ...]`` (t at the end of each bin)."""
    return [[round((i + 1) * bin_s, 3), c / bin_s] for i, c in enumerate(counts)]
