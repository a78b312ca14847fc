"""The web layer's counters and gauges, rendered in the Prometheus text format.

Plain integers mutated from the event loop (one thread), so no locks. ``/metrics`` renders these
after the engine's own metrics.
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
