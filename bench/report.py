"""The human-readable report: one self-contained HTML page with inline SVG charts.

No plotting dependency: the charts are drawn here as SVG polylines. A bench fills
``BenchResult.series`` with named series; the part of the name before ``":"`` is the chart it
belongs to, the rest its legend label:

- ``"throughput[ subject]:<label>"``: ``[[t_s, per_second], ...]``, drawn over time (one chart
  per subject, e.g. ``"throughput relay:closed loop"``);
- ``"latency[ subject]:<label>"``: ``[[ms, cumulative fraction], ...]`` (``cdf_points``),
  drawn by percentile (50 %, 90 %, 99 %, 99.9 %...) on log axes so the tail is visible;
- any other ``[[x, y], ...]`` is drawn as a line, and a list of plain numbers as a latency-like
  distribution of samples.

``write_report(results, report_dir)`` writes ``report_dir/index.html`` and returns its path.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import BenchResult, cdf_points, machine_info, versions

WIDTH, HEIGHT = 720, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 30, 45
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MAX_NINES = 4  # percentile axis up to 99.99 %

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #2a7d2a; font-weight: bold; } .missed { color: #b22; font-weight: bold; }
.note { background: #fff6e0; padding: 4px 8px; border-left: 3px solid #e0a000; margin: 4px 0; }
svg { background: #fff; border: 1px solid #eee; margin: 0.5em 0; }
svg text { font-size: 11px; fill: #333; }
details { margin: 0.5em 0; }
"""


def write_report(results: Sequence[BenchResult], report_dir: Path) -> Path:
    """Write ``index.html`` (and ``results.json``) into ``report_dir``; return the page's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    page = render_page(results)
    path = report_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    payload = [r.to_json() | {"series": r.series} for r in results]
    (report_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def render_page(results: Sequence[BenchResult]) -> str:
    machine = machine_info()
    names = ", ".join(r.name for r in results)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>livechat bench: {html.escape(names)}</title><style>{_CSS}</style></head><body>",
        f"<h1>livechat bench: {html.escape(names)}</h1>",
        "<h2>Machine</h2>",
        _table(machine),
        "<details><summary>Versions</summary>",
        _table(versions()),
        "</details>",
    ]
    for result in results:
        parts.append(_render_result(result))
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_result(result: BenchResult) -> str:
    parts = [f"<h2>{html.escape(result.name)}</h2>"]
    if result.ratio_to_ceiling is not None:
        parts.append(f"<p><b>ratio_to_ceiling</b>: {result.ratio_to_ceiling:.3f}</p>")
    targets = result.results.get("targets")
    if isinstance(targets, dict) and targets:
        parts.append("<h3>Targets</h3><table><tr><th>target</th><th>goal</th>")
        parts.append("<th>measured</th><th>met</th></tr>")
        for name, target in targets.items():
            if not isinstance(target, dict):
                continue
            met = target.get("met")
            cls, word = (
                ("met", "yes")
                if met is True
                else ("missed", "no")
                if met is False
                else (
                    "",
                    "n/a",
                )
            )
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(target.get('target')))}"
                f"</td><td class='num'>{html.escape(str(target.get('measured')))}</td>"
                f"<td class='{cls}'>{word}</td></tr>"
            )
        parts.append("</table>")
    for note in result.notes:
        parts.append(f"<div class='note'>{html.escape(note)}</div>")
    for title, chart in _charts(result.series):
        parts.append(f"<h3>{html.escape(title)}</h3>{chart}")
    for where, measured in (
        ("server", result.results.get("server")),
        ("ceiling", result.ceiling),
        ("in-process", {"closed loop": {"profile": result.results.get("profile")}}),
    ):
        parts.extend(_profiles(where, measured))
    parts.append("<h3>Results</h3>")
    parts.append(_table({k: v for k, v in result.results.items() if k != "targets"}))
    if result.ceiling:
        parts.append("<h3>Ceiling</h3>")
        parts.append(_table(result.ceiling))
    parts.append("<details><summary>Parameters</summary>")
    parts.append(_table(result.parameters))
    parts.append("</details>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ tables


def _profiles(where: str, measured: Any) -> list[str]:
    """A section per py-spy profile found in ``measured`` (``<phase>.profile``)."""
    if not isinstance(measured, dict):
        return []
    out = []
    for phase, summary in measured.items():
        profile = summary.get("profile") if isinstance(summary, dict) else None
        if not isinstance(profile, dict) or not profile.get("samples"):
            continue
        out.append(
            f"<h3>Profile: {html.escape(where)} {html.escape(str(phase))} "
            f"({html.escape(str(profile.get('tool')))}, {profile['samples']} samples)</h3>"
        )
        for kind in ("self", "inclusive"):
            rows = "".join(
                f"<tr><td class='num'>{pct}%</td><td>{html.escape(str(name))}</td></tr>"
                for pct, name in profile.get(kind, [])
            )
            out.append(f"<details><summary>{kind}</summary><table>{rows}</table></details>")
    return out


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and "samples" in data and "self" in data:
        return [(f"{prefix}.samples", data["samples"])]  # a profile: shown in its own section
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(data, list) and len(data) > 8:
        return [(prefix, f"[{len(data)} values]")]
    return [(prefix, data)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(data: Any) -> str:
    rows = _flatten(data)
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='num'>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table>{body}</table>"


# ------------------------------------------------------------------------------------ charts


def _charts(series: dict[str, list[Any]]) -> list[tuple[str, str]]:
    groups: dict[str, dict[str, list[Any]]] = {}
    for name, points in series.items():
        group, _, label = name.partition(":")
        groups.setdefault(group, {})[label or group] = points
    charts: list[tuple[str, str]] = []
    for group, members in groups.items():
        pairs = {k: v for k, v in members.items() if v and isinstance(v[0], list | tuple)}
        samples = {k: v for k, v in members.items() if v and isinstance(v[0], int | float)}
        for label, values in samples.items():
            pairs[label] = cdf_points([float(x) for x in values])
        if not pairs:
            continue
        kind, _, subject = group.partition(" ")
        suffix = f": {subject}" if subject else ""
        if kind == "latency" or samples:
            charts.append((f"{kind} by percentile{suffix}", percentile_chart(pairs)))
        else:
            unit = "messages/s" if kind == "throughput" else kind
            charts.append((f"{kind} over time{suffix}", line_chart(pairs, "time (s)", unit)))
    return charts


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _legend(labels: Sequence[str]) -> str:
    out = []
    for i, label in enumerate(labels):
        x = MARGIN_LEFT + 10 + (i % 3) * 210
        y = MARGIN_TOP - 18 + (i // 3) * 13
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f"<rect x='{x}' y='{y - 8}' width='12' height='3' fill='{color}'/>"
            f"<text x='{x + 16}' y='{y - 4}'>{html.escape(label[:32])}</text>"
        )
    return "".join(out)


def _svg(body: str, legend_rows: int) -> str:
    height = HEIGHT + 13 * max(0, legend_rows - 1)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 {-13 * max(0, legend_rows - 1)} {WIDTH} {height}'>{body}</svg>"
    )


def line_chart(series: dict[str, list[Any]], x_label: str, y_label: str) -> str:
    """Lines on linear axes starting at zero (throughput over time)."""
    xs = [float(p[0]) for pts in series.values() for p in pts]
    ys = [float(p[1]) for pts in series.values() for p in pts]
    x_hi = max(xs, default=1.0) or 1.0
    y_hi = (max(ys, default=1.0) or 1.0) * 1.05
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + plot_w * x / x_hi

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h * (1 - y / y_hi)

    body = [_axes(plot_w, plot_h, x_label, y_label)]
    for t in _nice_ticks(0, x_hi):
        body.append(_x_tick(sx(t), plot_h, _fmt(t)))
    for t in _nice_ticks(0, y_hi):
        body.append(_y_tick(sy(t), _fmt(t)))
    for i, points in enumerate(series.values()):
        coords = " ".join(f"{sx(float(x)):.1f},{sy(float(y)):.1f}" for x, y in points)
        color = PALETTE[i % len(PALETTE)]
        body.append(
            f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/>"
        )
    body.append(_legend(list(series)))
    return _svg("".join(body), (len(series) + 2) // 3)


def percentile_chart(series: dict[str, list[Any]]) -> str:
    """Latency (log ms) against percentile on a "nines" axis: 0, 90, 99, 99.9, 99.99 %."""
    values = [float(p[0]) for pts in series.values() for p in pts if float(p[0]) > 0]
    lo = 10 ** math.floor(math.log10(min(values, default=0.01)))
    hi = 10 ** math.ceil(math.log10(max(values, default=1.0)))
    if hi <= lo:
        hi = lo * 10
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def nines(fraction: float) -> float:
        return min(MAX_NINES, -math.log10(max(1e-12, 1 - fraction)))

    def sx(n: float) -> float:
        return MARGIN_LEFT + plot_w * n / MAX_NINES

    def sy(ms: float) -> float:
        ms = max(ms, lo)
        return MARGIN_TOP + plot_h * (1 - (math.log10(ms) - math.log10(lo)) / math.log10(hi / lo))

    body = [_axes(plot_w, plot_h, "percentile", "latency (ms, log)")]
    for n, label in enumerate(("0%", "90%", "99%", "99.9%", "99.99%")):
        body.append(_x_tick(sx(n), plot_h, label))
    decade = lo
    while decade <= hi * 1.0001:
        body.append(_y_tick(sy(decade), _fmt(decade)))
        decade *= 10
    for i, points in enumerate(series.values()):
        coords = " ".join(
            f"{sx(nines(float(f))):.1f},{sy(float(ms)):.1f}"
            for ms, f in points
            if float(f) < 1.0 or nines(float(f)) <= MAX_NINES
        )
        color = PALETTE[i % len(PALETTE)]
        body.append(
            f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/>"
        )
    body.append(_legend(list(series)))
    return _svg("".join(body), (len(series) + 2) // 3)


def _axes(plot_w: float, plot_h: float, x_label: str, y_label: str) -> str:
    x0, y0 = MARGIN_LEFT, MARGIN_TOP + plot_h
    return (
        f"<line x1='{x0}' y1='{MARGIN_TOP}' x2='{x0}' y2='{y0}' stroke='#888'/>"
        f"<line x1='{x0}' y1='{y0}' x2='{x0 + plot_w}' y2='{y0}' stroke='#888'/>"
        f"<text x='{x0 + plot_w / 2}' y='{HEIGHT - 8}' text-anchor='middle'>"
        f"{html.escape(x_label)}</text>"
        f"<text x='14' y='{MARGIN_TOP + plot_h / 2}' text-anchor='middle' "
        f"transform='rotate(-90 14 {MARGIN_TOP + plot_h / 2})'>{html.escape(y_label)}</text>"
    )


def _x_tick(x: float, plot_h: float, label: str) -> str:
    y = MARGIN_TOP + plot_h
    return (
        f"<line x1='{x:.1f}' y1='{MARGIN_TOP}' x2='{x:.1f}' y2='{y}' stroke='#eee'/>"
        f"<text x='{x:.1f}' y='{y + 15}' text-anchor='middle'>{html.escape(label)}</text>"
    )


def _y_tick(y: float, label: str) -> str:
    return (
        f"<line x1='{MARGIN_LEFT}' y1='{y:.1f}' x2='{WIDTH - MARGIN_RIGHT}' y2='{y:.1f}' "
        f"stroke='#eee'/><text x='{MARGIN_LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>"
        f"{html.escape(label)}</text>"
    )


# ---------------------------------------------------------------------------------- markdown


def markdown_summary(payload: dict[str, Any]) -> str:
    """A results table for ``docs/benchmarks.md`` from one bench's JSON (``--json`` output)."""
    machine = payload.get("machine", {})
    lines = [
        f"**{payload.get('bench')}**: {machine.get('date')}, commit `{machine.get('commit')}`, "
        f"{machine.get('cpu_count')} x {machine.get('cpu_model')}, Python {machine.get('python')}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    results = payload.get("results", {})
    rows = _flatten({"server": results.get("server")})
    rows += [
        (k, v) for k, v in results.items() if isinstance(v, int | float) and k != "ratio_to_ceiling"
    ]
    rows += _flatten({"ceiling": payload.get("ceiling")})
    rows += [("ratio_to_ceiling", payload.get("ratio_to_ceiling"))]
    keep = (
        "delivered_msgs_s",
        "cpu_us_per_msg",
        "p99_ms_at_half_saturation",
        "throughput_msgs_s",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "lost",
        "acked_undelivered",
        "cuts_1013",
        "duplicates",
        "errors",
        "server_cpu_percent",
        "other_cpu_percent",
        "loadgen_cpu_percent",
        "server_rss_mb",
        "rss_kib_per_connection",
        "connect_rate_per_s",
        "server_cpu_us_per_heartbeat",
        "idle_cpu_percent",
        "connections",
        "pairs",
        "ratio_to_ceiling",
    )
    for key, value in rows:
        if value is None or not key.endswith(keep):
            continue
        lines.append(f"| {key} | {_fmt(value)} |")
    profile = results.get("profile")
    if isinstance(profile, dict) and profile.get("self"):
        lines += ["", f"Top frames (py-spy, {profile['samples']} samples, self):", ""]
        lines += [f"- {pct} % {name}" for pct, name in profile["self"][:10]]
    targets = results.get("targets") or {}
    if targets:
        lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
        for name, target in targets.items():
            met = {True: "yes", False: "**no**"}.get(target.get("met"), "n/a")
            lines.append(
                f"| {name} | {target.get('target')} | {_fmt(target.get('measured'))} | {met} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description="Markdown tables from bench JSON results."
    )
    parser.add_argument("json_files", nargs="+")
    args = parser.parse_args(argv)
    for name in args.json_files:
        payload = json.loads(Path(name).read_text())
        for one in payload.get("benches", [payload]):
            print(markdown_summary(one))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def write_outputs(
    results: Sequence[BenchResult], *, json_path: str | None, report_dir: str | None
) -> None:
    payload: Mapping[str, Any]
    if len(results) == 1:
        payload = results[0].to_json()
    else:
        payload = {"benches": [r.to_json() for r in results]}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if report_dir:
        write_report(results, Path(report_dir))
