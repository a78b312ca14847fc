"""The e2e bench in a tiny configuration: the output has its shape and nothing is lost.

Never asserts a speed: the bench measures, the test only checks the machinery.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.e2e import E2EParams, run_e2e
from bench.report import write_outputs

# drain_s bounds a drain without progress (it ends as soon as nothing is in flight): generous,
# so a loaded machine's stragglers are waited for instead of counted lost.
TINY = dict(pairs=4, rate_msgs_s=80.0, open_duration_s=1.0, closed_duration_s=1.0, drain_s=30.0)
PHASE_KEYS = {
    "offered_msgs_s",
    "delivered_msgs_s",
    "sent",
    "delivered",
    "lost",
    "acked_undelivered",
    "duplicates",
    "errors",
    "latency_v2a",
    "latency_a2v",
    "server_cpu_percent",
    "server_rss_mb",
    "loadgen_cpu_percent",
    "loadgen_saturated",
}


def _assert_no_loss(measured: dict[str, object]) -> None:
    for phase in ("open_loop", "closed_loop"):
        summary = measured[phase]
        assert isinstance(summary, dict)
        assert summary.keys() >= PHASE_KEYS
        assert summary["delivered"] == summary["sent"] > 0, summary
        assert summary["lost"] == summary["duplicates"] == summary["errors"] == 0, summary
        assert summary["acked_undelivered"] == summary["outstanding_unacked"] == 0, summary
        assert summary["seq_violations"] == 0
        assert set(summary["latency_v2a"]) == {"p50_ms", "p99_ms", "p999_ms"}


async def test_run_measures_server_and_ceiling_without_loss_and_writes_outputs(
    tmp_path: Path,
) -> None:
    """One run, both targets: the real server and the bare relay under the same load."""
    result = await run_e2e(E2EParams(**TINY))  # type: ignore[arg-type]

    _assert_no_loss(result.results["server"])
    _assert_no_loss(result.ceiling)
    assert result.ceiling["connect"]["pairs"] == result.results["server"]["connect"]["pairs"] == 4
    assert isinstance(result.ratio_to_ceiling, float)
    assert result.results["server"]["server_rss_mb_idle"] is not None
    write_outputs([result], json_path=str(tmp_path / "e2e.json"), report_dir=str(tmp_path / "r"))
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert {"machine", "versions", "parameters", "results", "ceiling", "ratio_to_ceiling"} <= set(
        data
    )
    assert data["results"]["targets"]["lost_or_duplicated"]["met"] is True
    assert data["results"]["acked_undelivered"] == data["results"]["lost"] == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count("<svg") >= 2  # throughput over time and the latency distribution
    assert "throughput over time" in page and "latency by percentile" in page
