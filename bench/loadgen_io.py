"""What the load-generator parent and its children share: the JSON-lines pipe between them,
the error either side raises, and the process limits a child measures and raises.

The parent writes commands to a child's stdin and reads its events from its stdout, one compact
JSON object a line (see ``bench.loadgen``).
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

import trio

BIN_S = 0.25  # width of a throughput-over-time bin
STOP_TIMEOUT_S = 5.0
LINE_LIMIT_BYTES = 256 * 1024 * 1024


class LoadGenError(Exception):
    """A load-generator child failed or answered something unexpected."""


def raise_nofile_limit(wanted: int) -> tuple[int, int, str | None]:
    """Raise RLIMIT_NOFILE towards ``wanted``; returns (soft, hard, note about what fell short)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = None
    if soft >= wanted:
        return soft, hard, None
    target = wanted
    if hard != resource.RLIM_INFINITY and wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted, wanted, None
        except (ValueError, OSError):
            target = hard
            note = (
                f"open-file limit: wanted {wanted}, hard limit is {hard} and cannot be raised "
                "without privileges (raise it with `ulimit -Hn` or limits.conf)"
            )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as err:
        note = f"open-file limit: could not raise soft limit {soft} to {target}: {err}"
        return soft, hard, note
    return target, hard, note


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        """One line without its newline, or None at end of stream."""
        while True:
            index = self._buffer.find(b"\n")
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 1]
                return line
            if len(self._buffer) > LINE_LIMIT_BYTES:
                raise LoadGenError("line too long")
            chunk = await self._stream.receive_some(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()
