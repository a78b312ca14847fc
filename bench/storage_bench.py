"""Storage layer bench: durable appends/s (group commit vs one transaction per message), and
history-page and search latency at N stored messages, on SQLite and (if reachable) PostgreSQL.

Per backend, in the same run:

1. ``appends_per_s_group``: C concurrent callers append through the group committer (default
   batch/delay bounds); every append is durable (SQLite ``synchronous=FULL``, PostgreSQL commit)
   when the caller is released.
2. ``appends_per_s_single``: the same callers, but one transaction per message (committer with
   ``max_batch=1``): the baseline; ``group_commit_ratio`` is 1 / 2.
3. Bulk-load N messages (executemany in large transactions, like a restore), then time
   ``history`` pages (50 events before a random seq of a random conversation) and ``search``
   (one word of mid frequency) one at a time: p50/p99 in ms.

Zero loss is checked, not assumed: acknowledged appends are counted in the database afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import trio

from bench.common import BenchResult, Progress, latency_summary_ms

DEFAULT_PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
FULL_MESSAGES: Final = 1_000_000
QUICK_MESSAGES: Final = 20_000
MESSAGES_PER_CONVERSATION: Final = 100
VOCABULARY: Final = 5000
WORDS_PER_MESSAGE: Final = 8
BULK_CHUNK: Final = 10_000
TARGETS: Final = {
    "group_commit_ratio": 10.0,
    "sqlite_appends_per_s_group": 20_000.0,
    "postgresql_appends_per_s_group": 10_000.0,
    "history_p99_ms": 5.0,
    "search_p99_ms": 50.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES} stored messages")
    parser.add_argument(
        "--messages", type=int, default=None, help=f"stored messages (default {FULL_MESSAGES})"
    )
    parser.add_argument("--appends", type=int, default=None, help="durable appends timed")
    parser.add_argument("--callers", type=int, default=256, help="concurrent appenders")
    parser.add_argument("--queries", type=int, default=None, help="history/search samples")
    parser.add_argument("--sqlite", default=None, help="SQLite file (default: a temp dir)")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL to bench in a throwaway schema; 'none' to skip",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timed group appends, sample more of them with py-spy (top frames)",
    )
    parser.add_argument("--profile-s", type=float, default=5.0, help="profiled phase length")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="without encryption at rest (the server always encrypts; this measures its cost)",
    )


def run(args: argparse.Namespace) -> BenchResult:
    messages = args.messages or (QUICK_MESSAGES if args.quick else FULL_MESSAGES)
    return trio.run(
        lambda: run_storage_bench(
            backend_url=None,
            messages=messages,
            quick=args.quick,
            appends=args.appends,
            callers=args.callers,
            queries=args.queries,
            sqlite_path=args.sqlite,
            postgres_url=None if args.postgres_url == "none" else args.postgres_url,
            plaintext=args.plaintext,
            profile_s=args.profile_s if args.profile else None,
        )
    )


async def run_storage_bench(
    *,
    backend_url: str | None,
    messages: int,
    quick: bool,
    appends: int | None = None,
    callers: int = 256,
    queries: int | None = None,
    sqlite_path: str | None = None,
    postgres_url: str | None = DEFAULT_PG_URL,
    progress: bool = True,
    plaintext: bool = False,
    profile_s: float | None = None,
) -> BenchResult:
    """Bench ``backend_url`` alone, or (None) SQLite plus PostgreSQL when reachable."""
    appends = appends or (5_000 if quick else 50_000)
    queries = queries or (300 if quick else 2000)
    notes: list[str] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        urls: dict[str, str] = {}
        if backend_url is not None:
            urls["postgresql" if backend_url.startswith("postgres") else "sqlite"] = backend_url
        else:
            urls["sqlite"] = f"sqlite:///{sqlite_path or Path(tmp) / 'bench.db'}"
            if postgres_url and _reachable(postgres_url):
                urls["postgresql"] = postgres_url
            else:
                notes.append(f"PostgreSQL skipped: {postgres_url or 'none'} unreachable")
        for backend, url in urls.items():
            if backend == "postgresql":
                per = await _with_pg_schema(
                    url,
                    lambda u: _bench_backend(
                        u, messages, appends, callers, queries, progress, plaintext, profile_s
                    ),
                )
            else:
                per = await _bench_backend(
                    url, messages, appends, callers, queries, progress, plaintext, profile_s
                )
            results[backend] = per
            for key, value in per.items():
                results[f"{backend}_{key}"] = value
    results["targets"] = _targets(results)
    load_1m = os.getloadavg()[0]
    results["load_avg_1m_at_end"] = round(load_1m, 2)
    results["cpu_count"] = os.cpu_count()
    if load_1m > (os.cpu_count() or 1):
        notes.append(
            f"machine busy: 1-minute load average {load_1m:.1f} at the end of the run on"
            f" {os.cpu_count()} CPUs (per-backend start/end loads in the results); compare the"
            " same-run group/single ratio rather than absolute rates"
        )
    return BenchResult(
        name="storage",
        parameters={
            "messages": messages,
            "appends": appends,
            "callers": callers,
            "queries": queries,
            "quick": quick,
            "backends": list(urls),
        },
        results=results,
        notes=notes,
    )


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


async def _with_pg_schema(url: str, body: Any) -> dict[str, Any]:
    """Run ``body(url_with_schema)`` in a throwaway schema, dropped afterwards."""
    import asyncpg
    import trio_asyncio

    schema = f"bench_{int(time.time() * 1000)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(admin)(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        result: dict[str, Any] = await body(f"{url}{sep}search_path={schema}")
        return result
    finally:
        with trio.CancelScope(shield=True):
            async with trio_asyncio.open_loop():
                await trio_asyncio.aio_as_trio(admin)(f"DROP SCHEMA {schema} CASCADE")
                # and its key vault (storage._vault)
                await trio_asyncio.aio_as_trio(admin)(
                    f"DROP SCHEMA IF EXISTS {schema}_vault CASCADE"
                )


async def _bench_backend(
    url: str,
    messages: int,
    appends: int,
    callers: int,
    queries: int,
    progress: bool,
    plaintext: bool = False,
    profile_s: float | None = None,
) -> dict[str, Any]:
    from storage import GroupCommitConfig, MasterKeyRing
    from storage import open_backend as open_plain
    from storage.crypto import new_master_key_text, parse_master_keys

    # As the server runs: encrypted at rest (a throwaway master key), unless --plaintext.
    ring = None if plaintext else MasterKeyRing(parse_master_keys(new_master_key_text()))

    def open_backend(url: str, **options: Any) -> Any:
        return open_plain(url, keyring=ring, **options)

    out: dict[str, Any] = {"load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    out["encrypted"] = ring is not None
    async with open_backend(url) as storage:
        rate, cpu_us, lost = await _appends(storage, appends, callers, "group", progress)
        out["appends_per_s_group"] = round(rate, 1)
        out["cpu_us_per_append_group"] = round(cpu_us, 1)
        out["appends_lost"] = lost
        if profile_s is not None:
            out["profile"] = await _profiled_appends(storage, callers, profile_s)
    single = GroupCommitConfig(max_batch=1, max_delay_s=0.0)
    async with open_backend(url, group_commit=single) as storage:
        rate, cpu_us, lost = await _appends(
            storage, max(200, appends // 10), callers, "single", progress
        )
        out["appends_per_s_single"] = round(rate, 1)
        out["cpu_us_per_append_single"] = round(cpu_us, 1)
        out["appends_lost"] += lost
    out["group_commit_ratio"] = round(out["appends_per_s_group"] / out["appends_per_s_single"], 1)
    async with open_backend(url) as storage:
        workspace_id, conversation_ids, load_s = await _bulk_load(storage, messages, progress)
        out["bulk_load_rows_per_s"] = round(messages / load_s, 1)
        history = await _time_history(storage, workspace_id, conversation_ids, queries)
        search = await _time_search(storage, workspace_id, queries)
    out["history_p50_ms"], out["history_p99_ms"] = history["p50_ms"], history["p99_ms"]
    out["search_p50_ms"], out["search_p99_ms"] = search["p50_ms"], search["p99_ms"]
    out["stored_messages"] = messages
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


async def _appends(
    storage: Any, total: int, callers: int, label: str, progress: bool
) -> tuple[float, float, int]:
    """Append ``total`` messages from ``callers`` tasks; (appends/s, this process's CPU µs per
    append (callers, committer, driver; not the PostgreSQL server's), acknowledged-but-missing).
    """
    from storage import AppendRequest, AuthorType, EventKind

    workspace = await storage.create_workspace(name=f"bench-{label}")
    visitor = await storage.create_visitor(workspace.id, token_hash=None)
    conversations = [
        (await storage.create_conversation(workspace.id, visitor_id=visitor.id)).id
        for _ in range(min(callers, 64))
    ]
    bar = Progress(f"appends ({label})", total) if progress else None
    acked: set[tuple[str, int]] = set()
    next_index = iter(range(total))

    async def caller(c: int) -> None:
        for n in next_index:
            conversation_id = conversations[n % len(conversations)]
            result = await storage.append(
                AppendRequest(
                    workspace_id=workspace.id,
                    conversation_id=conversation_id,
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.VISITOR,
                    body=f"bench message {n} from caller {c}",
                    client_msg_id=f"{label}-{n}",
                )
            )
            acked.add((conversation_id, result.event.seq))
            if bar is not None:
                bar.update(len(acked))

    started = time.perf_counter()
    cpu_started = time.process_time()
    async with trio.open_nursery() as nursery:
        for c in range(callers):
            nursery.start_soon(caller, c)
    elapsed = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu_started) * 1e6 / total
    stored = 0
    for conversation_id in conversations:
        conv = await storage.get_conversation(workspace.id, conversation_id)
        stored += conv.last_seq
    return total / elapsed, cpu_us, len(acked) - min(stored, len(acked)) + (total - len(acked))


async def _profiled_appends(storage: Any, callers: int, duration_s: float) -> dict[str, Any]:
    """Group appends for ``duration_s`` sampled by py-spy (from outside, on this process),
    apart from the timed phase so sampling does not disturb its figures; the summary, or a
    ``note`` saying why there is none."""
    from bench import profile as profiling
    from storage import AppendRequest, AuthorType, EventKind

    workspace = await storage.create_workspace(name="bench-profiled")
    visitor = await storage.create_visitor(workspace.id, token_hash=None)
    conversations = [
        (await storage.create_conversation(workspace.id, visitor_id=visitor.id)).id
        for _ in range(min(callers, 64))
    ]
    count = 0
    stop = False

    async def caller() -> None:
        nonlocal count
        while not stop:
            count += 1
            await storage.append(
                AppendRequest(
                    workspace_id=workspace.id,
                    conversation_id=conversations[count % len(conversations)],
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.VISITOR,
                    body=f"profiled message {count}",
                    client_msg_id=f"profiled-{count}",
                )
            )

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "storage.pyspy.raw"
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
            failed = await profiling.record(os.getpid(), duration_s, raw)
            stop = True
        return {"note": failed} if failed else profiling.summarize(raw)


def _words() -> list[str]:
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        "".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(VOCABULARY)
    ]


async def _bulk_load(storage: Any, messages: int, progress: bool) -> tuple[str, list[str], float]:
    """Insert ``messages`` events into conversations of 100, in large executemany chunks."""
    from storage._base import fetch
    from storage._records import dump_json, new_id
    from storage._sql import Q
    from storage.crypto import plain_terms

    workspace = await storage.create_workspace(name="bench-history")
    visitor = await storage.create_visitor(workspace.id, token_hash=None)
    words = _words()
    # Zipf-like word frequencies; cumulative weights once (choices() would redo them per call).
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(VOCABULARY)))
    rng = random.Random(11)
    n_conversations = max(1, messages // MESSAGES_PER_CONVERSATION)
    conversation_ids = [new_id() for _ in range(n_conversations)]
    bar = Progress("bulk load", messages) if progress else None
    now = time.time()
    started = time.perf_counter()
    conv_sql = (
        "INSERT INTO conversations (id, workspace_id, visitor_id, state, participant_ids, tags,"
        " last_seq, created_at, last_activity_at) VALUES (?, ?, ?, 'closed', '[]', '[]', ?, ?, ?)"
    )
    event_sql = (
        "INSERT INTO events (workspace_id, conversation_id, seq, kind, visibility, author_type,"
        " author_id, body, data, client_msg_id, created_at, search_terms)"
        " VALUES (?, ?, ?, 'message', 'all', 'visitor', NULL, ?, ?, NULL, ?, ?)"
    )
    # Stored as the server stores them: sealed, with the keyed blind index (storage.crypto).
    key = await storage.data_key(workspace.id)
    done = 0
    empty = dump_json({})
    per_chunk = max(1, BULK_CHUNK // MESSAGES_PER_CONVERSATION)
    # Time advances with every stored message (one second apart, ending now), as in a live
    # system: the newest events are the most recently written ones.
    at = now - messages
    for first in range(0, n_conversations, per_chunk):
        chunk = conversation_ids[first : first + per_chunk]
        conv_rows = []
        event_rows = []
        for conversation_id in chunk:
            count = min(MESSAGES_PER_CONVERSATION, messages - done)
            conv_rows.append([conversation_id, workspace.id, visitor.id, count, at, at + count])
            for seq in range(1, count + 1):
                body = " ".join(rng.choices(words, cum_weights=cum_weights, k=WORDS_PER_MESSAGE))
                if key is not None:
                    row = [key.seal(body, "events.body"), empty, at + seq, key.terms(body)]
                else:
                    row = [body, empty, at + seq, plain_terms(body)]
                event_rows.append([workspace.id, conversation_id, seq, *row])
            at += count
            done += count
        async with storage.transaction(write=True) as tx:
            await tx.run(Q(conv_sql, many=conv_rows))
            await tx.run(Q(event_sql, many=event_rows))
        if bar is not None:
            bar.update(done)
    if storage.backend_name == "postgresql":
        # Steady state, as autovacuum would leave it: statistics, visibility map and hint bits
        # set (otherwise the first reads of each page write it back, timed as query latency).
        for table in ("events", "conversations"):
            await storage._read(fetch(Q(f"VACUUM (ANALYZE) {table}", script=True)))
    return workspace.id, conversation_ids, time.perf_counter() - started


async def _time_history(
    storage: Any, workspace_id: str, conversation_ids: list[str], queries: int
) -> dict[str, float | None]:
    rng = random.Random(3)
    samples = []
    for _ in range(queries):
        conversation_id = rng.choice(conversation_ids)
        before = rng.randint(2, MESSAGES_PER_CONVERSATION + 1)
        started = time.perf_counter()
        events = await storage.history(workspace_id, conversation_id, before_seq=before, limit=50)
        samples.append(time.perf_counter() - started)
        assert events, "history returned nothing"
    return latency_summary_ms(samples)


async def _time_search(storage: Any, workspace_id: str, queries: int) -> dict[str, float | None]:
    rng = random.Random(5)
    words = _words()
    samples = []
    for _ in range(queries):
        word = words[rng.randint(100, VOCABULARY - 1)]  # mid-frequency words
        started = time.perf_counter()
        await storage.search(workspace_id, word, limit=20)
        samples.append(time.perf_counter() - started)
    return latency_summary_ms(samples)


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for backend in ("sqlite", "postgresql"):
        per = results.get(backend)
        if not isinstance(per, dict):
            continue
        checks = {
            "group_commit_ratio": (per["group_commit_ratio"], TARGETS["group_commit_ratio"], ">="),
            "appends_per_s_group": (
                per["appends_per_s_group"],
                TARGETS[f"{backend}_appends_per_s_group"],
                ">=",
            ),
            "history_p99_ms": (per["history_p99_ms"], TARGETS["history_p99_ms"], "<="),
            "search_p99_ms": (per["search_p99_ms"], TARGETS["search_p99_ms"], "<="),
        }
        for name, (measured, target, op) in checks.items():
            met = (
                None
                if measured is None
                else (measured >= target if op == ">=" else measured <= target)
            )
            targets[f"{backend}_{name}"] = {
                "target": f"{op} {target}",
                "measured": measured,
                "met": met,
            }
    return targets
