"""Report aggregates, computed from conversation rows the same way on both backends.

The backend selects the rows (one indexed range query, plus the routing decisions that moved a
chat to a fallback group); percentiles and per-agent and per-group figures are computed here, so
SQLite and PostgreSQL cannot disagree about them. The definitions are in docs/reports.md:

- a chat is *agent-started* when an agent opened it (``start_chat``); it is counted in
  ``total_chats`` but never as missed and never in first-response times (its first response
  is the agent's own opening message, 0 s);
- a visitor-started chat is *missed* when no agent ever answered it (no first response),
  whatever closed it (nobody took it, offline form, the visitor left) or if it is still open;
- a chat belongs to the group that answered it: the group of its last ``group_fallback``
  routing decision, else the group it was opened in;
- duration is from opening to closing, over closed chats that were not missed;
- CSAT % is the share of rated chats rated 4 or 5 (of 5).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from storage import api
from storage._sql import Row

AGENT_STARTED_PREFIX = "start_chat:"  # engine.api.start_chat_origin
SATISFIED_MIN_RATING = 4


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank q-quantile of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, -(-int(q * 1000) * len(ordered) // 1000) - 1))
    return float(ordered[index])


def _csat(ratings: Sequence[int]) -> float | None:
    if not ratings:
        return None
    return round(100.0 * sum(r >= SATISFIED_MIN_RATING for r in ratings) / len(ratings), 1)


def fallback_groups(decisions: Sequence[Row]) -> dict[str, str | None]:
    """Conversation id -> the group its last ``group_fallback`` decision chose (rows by time)."""
    moved: dict[str, str | None] = {}
    for row in decisions:
        details: Any = row["details"]
        if isinstance(details, str):
            try:
                details = json.loads(details)
            except ValueError:
                continue
        if isinstance(details, Mapping) and "group_id" in details:
            group = details["group_id"]
            moved[str(row["conversation_id"])] = None if group is None else str(group)
    return moved


class _Tally:
    """Figures of one slice (the whole range, one agent, one group)."""

    def __init__(self) -> None:
        self.chats = 0
        self.missed = 0
        self.frt: list[float] = []
        self.durations: list[float] = []
        self.ratings: list[int] = []

    def add(
        self, missed: bool, frt: float | None, duration: float | None, rating: int | None
    ) -> None:
        self.chats += 1
        self.missed += missed
        if frt is not None:
            self.frt.append(frt)
        if duration is not None:
            self.durations.append(duration)
        if rating is not None:
            self.ratings.append(rating)

    def figures(self) -> dict[str, Any]:
        return {
            "chats": self.chats,
            "missed": self.missed,
            "frt_p50_s": _percentile(self.frt, 0.5),
            "duration_p50_s": _percentile(self.durations, 0.5),
            "avg_rating": statistics.fmean(self.ratings) if self.ratings else None,
            "csat_pct": _csat(self.ratings),
            "rated": len(self.ratings),
        }


def compute_report(
    rows: Sequence[Row], moved: Mapping[str, str | None] | None = None
) -> api.Report:
    """Rows: id, created_at, first_response_at, closed_at, close_reason, rating, assignee_id,
    group_id, origin_key; ``moved``: from ``fallback_groups``."""
    moved = moved or {}
    per_day: dict[str, int] = defaultdict(int)
    total = _Tally()
    agents: dict[str, _Tally] = defaultdict(_Tally)
    groups: dict[str, _Tally] = defaultdict(_Tally)
    agent_started = 0
    for row in rows:
        created = float(row["created_at"])
        day = datetime.datetime.fromtimestamp(created, datetime.UTC).date().isoformat()
        per_day[day] += 1
        by_agent = str(row["origin_key"] or "").startswith(AGENT_STARTED_PREFIX)
        agent_started += by_agent
        answered = row["first_response_at"] is not None
        missed = not by_agent and not answered
        frt = None
        if answered and not by_agent:
            frt = max(0.0, float(row["first_response_at"]) - created)
        duration = None
        if row["closed_at"] is not None and not missed:
            duration = max(0.0, float(row["closed_at"]) - created)
        rating = None if row["rating"] is None else int(row["rating"])
        total.add(missed, frt, duration, rating)
        if row["assignee_id"] is not None:
            agents[str(row["assignee_id"])].add(missed, frt, duration, rating)
        conv_id = str(row["id"])
        group = moved[conv_id] if conv_id in moved else row["group_id"]
        if group is not None:
            groups[str(group)].add(missed, frt, duration, rating)
    return api.Report(
        chats_per_day=tuple(sorted(per_day.items())),
        total_chats=total.chats,
        missed_chats=total.missed,
        first_response_p50_s=_percentile(total.frt, 0.5),
        first_response_p90_s=_percentile(total.frt, 0.9),
        average_rating=statistics.fmean(total.ratings) if total.ratings else None,
        per_agent=tuple(
            {"agent_id": agent_id, **tally.figures()} for agent_id, tally in sorted(agents.items())
        ),
        per_group=tuple(
            {"group_id": group_id, **tally.figures()} for group_id, tally in sorted(groups.items())
        ),
        agent_started_chats=agent_started,
        duration_p50_s=_percentile(total.durations, 0.5),
        csat_pct=_csat(total.ratings),
        rated_chats=len(total.ratings),
    )


CSV_COLUMNS = (
    "scope",
    "id",
    "name",
    "chats",
    "missed",
    "frt_p50_s",
    "duration_p50_s",
    "avg_rating",
    "csat_pct",
    "rated",
)


def report_csv(report: api.Report, names: Mapping[str, str]) -> str:
    """One row for the whole range, then one per agent and one per group; empty cell: none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def cell(v: Any) -> str:
        return "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))

    writer.writerow(
        [
            "total",
            "",
            "",
            report.total_chats,
            report.missed_chats,
            cell(report.first_response_p50_s),
            cell(report.duration_p50_s),
            cell(report.average_rating),
            cell(report.csat_pct),
            report.rated_chats,
        ]
    )
    for scope, key, items in (
        ("agent", "agent_id", report.per_agent),
        ("group", "group_id", report.per_group),
    ):
        for item in items:
            ident = str(item[key])
            name = names.get(ident, ident)
            if name[:1] in ("=", "+", "-", "@", "\t", "\r"):
                name = "'" + name  # a spreadsheet must not run a name as a formula
            writer.writerow([scope, ident, name] + [cell(item[c]) for c in CSV_COLUMNS[3:]])
    return out.getvalue()
