"""Engine metrics, rendered in the Prometheus text exposition format.

One `EngineMetrics` instance is created at start-up and passed explicitly to every
``Supervisor`` and ``Registry`` (and to the domain actors that observe routing latency and
commit batch sizes); there is no global registry. Updates are plain integer/float arithmetic
on the event loop thread, cheap enough for the hot path. Mailbox depths are not counted on
every message: they are sampled from the live mailboxes when the metrics are rendered.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence

# Routing latency: from intake to the handling actor; the interesting range is 0.1 ms to 1 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# Messages per storage commit: powers of two up to a large mailbox.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

DepthSource = Callable[[], Iterable[int]]


class Histogram:
    """A Prometheus histogram without labels: cumulative buckets, sum and count."""

    __slots__ = ("_bounds", "_counts", "count", "help", "name", "sum")

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be non-empty, sorted and distinct")
        self.name = name
        self.help = help
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (seconds, or a batch size)."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        pairs = []
        running = 0
        for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
            running += n
            pairs.append((bound, running))
        return pairs

    def render(self) -> list[str]:
        """Exposition lines for this histogram."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, n in self.cumulative():
            lines.append(f'{self.name}_bucket{{le="{_format_value(bound)}"}} {n}')
        lines.append(f"{self.name}_sum {_format_value(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class EngineMetrics:
    """Counters and gauges of the actor runtime, per actor kind (registry kind or supervisor
    name), plus the routing latency and commit batch size histograms."""

    def __init__(
        self,
        *,
        latency_buckets_s: Sequence[float] = LATENCY_BUCKETS_S,
        batch_size_buckets: Sequence[float] = BATCH_SIZE_BUCKETS,
    ) -> None:
        self._alive: dict[str, int] = {}
        self._restarts: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._service_restarts: dict[str, int] = {}  # by "<supervisor>/<child>"
        self._depth_sources: dict[str, list[DepthSource]] = {}
        self.routing_latency = Histogram(
            "livechat_routing_latency_seconds",
            "Time from intake until the target actor handles the message.",
            latency_buckets_s,
        )
        self.commit_batch_size = Histogram(
            "livechat_commit_batch_size",
            "Messages made durable by one storage commit.",
            batch_size_buckets,
        )

    def actor_started(self, kind: str) -> None:
        """An actor instance of ``kind`` began running."""
        self._alive[kind] = self._alive.get(kind, 0) + 1

    def actor_stopped(self, kind: str) -> None:
        """An actor instance of ``kind`` stopped, crashed or was cancelled."""
        self._alive[kind] = self._alive.get(kind, 0) - 1

    def actor_restarted(self, kind: str) -> None:
        """A supervisor or registry restarted an actor of ``kind``."""
        self._restarts[kind] = self._restarts.get(kind, 0) + 1

    def service_restarted(self, path: str) -> None:
        """A supervisor restarted its service child ``path`` ("livechat/storage",
        "delivery/mail", "engine/hub"): which part of the tree crashed, not only which level."""
        self._service_restarts[path] = self._service_restarts.get(path, 0) + 1

    def service_restarts(self, path: str) -> int:
        """Restarts of the service child ``path`` so far."""
        return self._service_restarts.get(path, 0)

    def actor_failed(self, kind: str) -> None:
        """A registry gave up on a key of ``kind``: it crashed past the restart intensity."""
        self._failures[kind] = self._failures.get(kind, 0) + 1

    def failures(self, kind: str) -> int:
        """Keys of ``kind`` given up on so far."""
        return self._failures.get(kind, 0)

    def track_mailboxes(self, kind: str, depths: DepthSource) -> None:
        """Register a callable yielding the depth of each live mailbox of ``kind``; it is
        called on demand (`mailbox_depth`, `render_prometheus`), never on the hot path."""
        self._depth_sources.setdefault(kind, []).append(depths)

    def alive(self, kind: str) -> int:
        """Actors of ``kind`` currently running."""
        return self._alive.get(kind, 0)

    def restarts(self, kind: str) -> int:
        """Restarts of actors of ``kind`` so far."""
        return self._restarts.get(kind, 0)

    def mailbox_depth(self, kind: str) -> tuple[int, int]:
        """``(max, sum)`` of the queued messages across live mailboxes of ``kind``, now."""
        deepest = total = 0
        for source in self._depth_sources.get(kind, ()):
            for depth in source():
                deepest = max(deepest, depth)
                total += depth
        return deepest, total

    def render_prometheus(self) -> str:
        """All metrics in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        _render_family(
            lines, "livechat_actors_alive", "gauge", "Actors currently running.", self._alive
        )
        _render_family(
            lines,
            "livechat_actor_restarts_total",
            "counter",
            "Actor restarts by a supervisor or registry.",
            self._restarts,
        )
        _render_family(
            lines,
            "livechat_service_restarts_total",
            "counter",
            "Restarts of a supervisor's service child, by <supervisor>/<child>.",
            self._service_restarts,
        )
        _render_family(
            lines,
            "livechat_actor_failures_total",
            "counter",
            "Actors stopped for good after crashing past their restart intensity.",
            self._failures,
        )
        depths = {kind: self.mailbox_depth(kind) for kind in sorted(self._depth_sources)}
        _render_family(
            lines,
            "livechat_mailbox_depth_max",
            "gauge",
            "Deepest mailbox of the kind when sampled.",
            {kind: deepest for kind, (deepest, _) in depths.items()},
        )
        _render_family(
            lines,
            "livechat_mailbox_depth_sum",
            "gauge",
            "Messages queued across the mailboxes of the kind when sampled.",
            {kind: total for kind, (_, total) in depths.items()},
        )
        lines.extend(self.routing_latency.render())
        lines.extend(self.commit_batch_size.render())
        return "\n".join(lines) + "\n"


def _render_family(
    lines: list[str], name: str, type_: str, help: str, by_kind: dict[str, int]
) -> None:
    lines.append(f"# HELP {name} {help}")
    lines.append(f"# TYPE {name} {type_}")
    for kind in sorted(by_kind):
        lines.append(f'{name}{{kind="{_escape_label(kind)}"}} {by_kind[kind]}')


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
