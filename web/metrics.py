"""The web layer's counters and gauges, rendered in the Prometheus text format.

Plain integers mutated from the event loop (one thread), so no locks. ``/metrics`` renders these
after the engine's own metrics; on a cluster node ``BusMetrics`` follows (the bus, forwarded
requests and the cluster-wide rate limits).
"""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define(eq=False)
class WebMetrics:
    http_requests: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (method, status)
    ws_connections_total: Counter[str] = attrs.field(factory=Counter)  # kind
    ws_connections_open: Counter[str] = attrs.field(factory=Counter)  # kind
    ws_frames_in: Counter[str] = attrs.field(factory=Counter)  # kind
    ws_frames_out: Counter[str] = attrs.field(factory=Counter)  # kind
    ws_errors: Counter[str] = attrs.field(factory=Counter)  # error code
    ws_closes: Counter[int] = attrs.field(factory=Counter)  # close code
    ws_refused: Counter[str] = attrs.field(factory=Counter)  # reason
    rate_limited: Counter[str] = attrs.field(factory=Counter)  # what
    logins: Counter[str] = attrs.field(factory=Counter)  # outcome

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, rows: list[tuple[str, int]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if not rows:
                lines.append(f"{name} 0")
            for labels, value in rows:
                lines.append(f"{name}{labels} {value}")

        def lab(**kv: object) -> str:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items())
            return "{" + inner + "}"

        family(
            "livechat_http_requests_total",
            "counter",
            "HTTP requests answered, by method and status.",
            [(lab(method=m, status=s), n) for (m, s), n in sorted(self.http_requests.items())],
        )
        family(
            "livechat_ws_connections_total",
            "counter",
            "WebSocket connections accepted.",
            [(lab(kind=k), n) for k, n in sorted(self.ws_connections_total.items())],
        )
        family(
            "livechat_ws_connections",
            "gauge",
            "WebSocket connections open now.",
            [(lab(kind=k), n) for k, n in sorted(self.ws_connections_open.items())],
        )
        family(
            "livechat_ws_frames_in_total",
            "counter",
            "Frames received from clients.",
            [(lab(kind=k), n) for k, n in sorted(self.ws_frames_in.items())],
        )
        family(
            "livechat_ws_frames_out_total",
            "counter",
            "Frames sent to clients.",
            [(lab(kind=k), n) for k, n in sorted(self.ws_frames_out.items())],
        )
        family(
            "livechat_ws_errors_total",
            "counter",
            "Error frames sent, by code.",
            [(lab(code=c), n) for c, n in sorted(self.ws_errors.items())],
        )
        family(
            "livechat_ws_closes_total",
            "counter",
            "WebSocket connections closed by the server, by close code.",
            [(lab(code=c), n) for c, n in sorted(self.ws_closes.items())],
        )
        family(
            "livechat_ws_refused_total",
            "counter",
            "WebSocket upgrades refused, by reason.",
            [(lab(reason=r), n) for r, n in sorted(self.ws_refused.items())],
        )
        family(
            "livechat_rate_limited_total",
            "counter",
            "Requests refused by a rate limit.",
            [(lab(limit=w), n) for w, n in sorted(self.rate_limited.items())],
        )
        family(
            "livechat_logins_total",
            "counter",
            "Login attempts by outcome.",
            [(lab(outcome=o), n) for o, n in sorted(self.logins.items())],
        )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# A forwarded request crosses Redis twice and the owner's loop once: sub-millisecond when all is
# well, seconds when a node or Redis is stuck (the callers' deadlines are a few seconds).
ROUND_TRIP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RECENT_WEIGHT = 0.2  # of the newest round trip in ``recent_round_trip_s`` (an EWMA)


@attrs.define(eq=False)
class Histogram:
    """Cumulative buckets of a Prometheus histogram (``le`` bounds, then ``+Inf``)."""

    bounds: tuple[float, ...] = ROUND_TRIP_BUCKETS_S
    counts: list[int] = attrs.field()
    total: float = 0.0
    count: int = 0

    @counts.default
    def _counts(self) -> list[int]:
        return [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1  # cumulative: every bucket from here up holds it
        # (+Inf is ``count``)

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, n in zip(self.bounds, self.counts, strict=True):
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {n}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


@attrs.define(eq=False)
class BusMetrics:
    """One cluster node's bus (web/bus.py, web/cluster.py) and its shared rate limits
    (web/ratelimit.py); rendered after ``WebMetrics`` on a node that has a bus."""

    requests: Counter[tuple[str, str]] = attrs.field(factory=Counter)  # (op, outcome)
    round_trip: Histogram = attrs.field(factory=Histogram)  # forwarded requests
    recent_round_trip_s: float | None = None  # requests and rate-limit syncs, an EWMA
    sent: Counter[str] = attrs.field(factory=Counter)  # message kind
    publishes: int = 0  # PUBLISH commands to nodes: a burst to one node is one (web/bus.py)
    received: Counter[str] = attrs.field(factory=Counter)  # message kind
    push_gaps: int = 0  # a push number skipped: the proxied socket ended (1013), it resumes
    proxies_ended: int = 0  # proxied sockets ended for any reason (1013, the client resumes)
    subscribed: int = 0  # 1 while this node listens on its channel
    reconnects: int = 0  # subscriptions lost (or not made), then tried again
    unavailable: Counter[str] = attrs.field(factory=Counter)  # what: Redis did not answer
    limit_syncs: Counter[str] = attrs.field(factory=Counter)  # outcome (ok, failed)
    limit_fallbacks: int = 0  # times the node began counting on its own windows alone
    limit_unsynced: int = 0  # hits counted here and not yet added in Redis

    def observe_round_trip(self, seconds: float, *, request: bool) -> None:
        if request:
            self.round_trip.observe(seconds)
        recent = self.recent_round_trip_s
        self.recent_round_trip_s = (
            seconds if recent is None else recent + RECENT_WEIGHT * (seconds - recent)
        )

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, rows: list[tuple[str, int]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if not rows:
                lines.append(f"{name} 0")
            for labels, value in rows:
                lines.append(f"{name}{labels} {value}")

        def lab(**kv: object) -> str:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items())
            return "{" + inner + "}"

        family(
            "livechat_bus_requests_total",
            "counter",
            "Requests forwarded to other nodes over the bus, by op and outcome.",
            [(lab(op=o, outcome=r), n) for (o, r), n in sorted(self.requests.items())],
        )
        lines.extend(
            self.round_trip.render(
                "livechat_bus_request_seconds",
                "Round trip of a forwarded request, from sending it to its answer.",
            )
        )
        family(
            "livechat_bus_messages_sent_total",
            "counter",
            "Messages published on the bus, by kind (push: to a socket on another node).",
            [(lab(kind=k), n) for k, n in sorted(self.sent.items())],
        )
        family(
            "livechat_bus_publishes_total",
            "counter",
            "PUBLISH commands to other nodes: the messages queued for one node go in one.",
            [("", self.publishes)],
        )
        family(
            "livechat_bus_messages_received_total",
            "counter",
            "Messages received from the bus, by kind.",
            [(lab(kind=k), n) for k, n in sorted(self.received.items())],
        )
        family(
            "livechat_bus_push_gaps_total",
            "counter",
            "Pushes missing on the bus: the proxied socket ended with 1013 and resumes.",
            [("", self.push_gaps)],
        )
        family(
            "livechat_bus_proxied_sockets_ended_total",
            "counter",
            "Sockets served through another node ended with 1013 (gap, owner gone, bus down).",
            [("", self.proxies_ended)],
        )
        family(
            "livechat_bus_subscribed",
            "gauge",
            "1 while this node listens on the bus.",
            [("", self.subscribed)],
        )
        family(
            "livechat_bus_reconnects_total",
            "counter",
            "Bus subscriptions lost (or not made), then tried again.",
            [("", self.reconnects)],
        )
        family(
            "livechat_bus_unavailable_total",
            "counter",
            "Bus operations Redis did not answer (in time), by what.",
            [(lab(what=w), n) for w, n in sorted(self.unavailable.items())],
        )
        family(
            "livechat_rate_limit_syncs_total",
            "counter",
            "Round trips adding this node's rate-limit hits in Redis and reading the totals.",
            [(lab(outcome=o), n) for o, n in sorted(self.limit_syncs.items())],
        )
        family(
            "livechat_rate_limit_fallbacks_total",
            "counter",
            "Times this node began counting rate limits alone because Redis was silent.",
            [("", self.limit_fallbacks)],
        )
        family(
            "livechat_rate_limit_unsynced_hits",
            "gauge",
            "Rate-limit hits counted on this node and not yet added in Redis.",
            [("", self.limit_unsynced)],
        )
        return "\n".join(lines) + "\n"
