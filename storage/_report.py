"""Report aggregates, computed from conversation rows the same way on both backends.

The backend selects the rows (one indexed range query); percentiles and per-agent and per-group
figures are computed here, so SQLite and PostgreSQL cannot disagree about them.
"""

from __future__ import annotations

import datetime
import statistics
from collections import defaultdict
from collections.abc import Sequence

from storage import api
from storage._sql import Row


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank q-quantile of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, -(-int(q * 1000) * len(ordered) // 1000) - 1))
    return float(ordered[index])


def compute_report(rows: Sequence[Row]) -> api.Report:
    """Rows: created_at, first_response_at, close_reason, rating, assignee_id, group_id."""
    per_day: dict[str, int] = defaultdict(int)
    response_times: list[float] = []
    ratings: list[int] = []
    agents: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"chats": 0, "missed": 0})
    missed = 0
    for row in rows:
        created = float(row["created_at"])
        day = datetime.datetime.fromtimestamp(created, datetime.UTC).date().isoformat()
        per_day[day] += 1
        is_missed = row["close_reason"] == api.CloseReason.MISSED.value
        missed += is_missed
        frt = None
        if row["first_response_at"] is not None:
            frt = float(row["first_response_at"]) - created
            response_times.append(frt)
        if row["rating"] is not None:
            ratings.append(int(row["rating"]))
        if row["assignee_id"] is not None:
            agent = agents[row["assignee_id"]]
            agent["chats"].append(1)
            if row["rating"] is not None:
                agent["ratings"].append(float(row["rating"]))
            if frt is not None:
                agent["frt"].append(frt)
        if row["group_id"] is not None:
            groups[row["group_id"]]["chats"] += 1
            groups[row["group_id"]]["missed"] += is_missed
    return api.Report(
        chats_per_day=tuple(sorted(per_day.items())),
        total_chats=len(rows),
        missed_chats=missed,
        first_response_p50_s=_percentile(response_times, 0.5),
        first_response_p90_s=_percentile(response_times, 0.9),
        average_rating=statistics.fmean(ratings) if ratings else None,
        per_agent=tuple(
            {
                "agent_id": agent_id,
                "chats": len(stats["chats"]),
                "avg_rating": statistics.fmean(stats["ratings"]) if stats["ratings"] else None,
                "frt_p50_s": _percentile(stats["frt"], 0.5),
            }
            for agent_id, stats in sorted(agents.items())
        ),
        per_group=tuple(
            {"group_id": group_id, **stats} for group_id, stats in sorted(groups.items())
        ),
    )
