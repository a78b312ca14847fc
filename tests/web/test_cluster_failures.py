"""The cluster's failures under traffic (issue 13, "Failure and change"): two node processes on
one PostgreSQL and one Redis, visitor/agent pairs sending continuously across them
(``tests/web/cluster_traffic.py``), while the owner is killed or drained, Redis restarts, or
PostgreSQL is unreachable for 30 s. Whatever breaks: every error a client hears says what to
do, nothing is acknowledged without a commit, nothing acknowledged is lost or stored twice,
every conversation stays gapless, every client is pushed every message, and the cluster
recovers by itself."""

from __future__ import annotations

import os
import signal

import trio

from tests.pg import OutageProxy, pg_url_or_skip
from tests.redis_server import PrivateRedis
from tests.web.client import Http
from tests.web.cluster_traffic import (
    UNLIMITED_ENV,
    Pair,
    Progress,
    check_nothing_lost,
    clients,
    open_pairs,
    report,
    start_traffic,
    unclear,
)
from tests.web.server import free_port
from tests.web.test_cluster import Node, _lease_holders, cluster

PAIRS = 6
WARM_UP = 10 * PAIRS  # acknowledgements before the failure: traffic is flowing
OUTAGE_S = 30.0  # the PostgreSQL outage the issue names
STORAGE_TIMEOUT_S = 4.0  # engine.storage_timeout_s: a commit in flight is answered within it


async def _until_ready(base: str, check: str, *, ok: bool) -> None:
    """Poll ``/readyz`` (as a load balancer does) until ``check`` is ok, or until it is not."""
    while True:
        response = await Http(base).get("/readyz")
        checks = response.json().get("checks", {})
        if (checks.get(check) == "ok") == ok and (response.status == 200) == ok:
            return
        await trio.sleep(0.2)  # deliberate: a health check's interval (no event to wait on)


async def _every_client_sends_again(pairs: list[Pair], progress: Progress) -> None:
    """Until each client got one acknowledgement more than it had when this was called."""
    before = {c.name: len(c.acked) for c in clients(pairs)}
    while any(len(c.acked) <= before[c.name] for c in clients(pairs)):
        await progress.more(1)


def _logs(nodes: list[Node]) -> list[str]:
    return [node.output.text for node in nodes]


async def test_killing_the_owner_under_traffic_loses_no_acknowledged_message() -> None:
    """SIGKILL of the owner mid-traffic: the other node takes over once the lease expired and
    every client, whichever node it used, goes on from where it was."""
    progress, pairs, nodes = Progress(), list[Pair](), list[Node]()
    try:
        with trio.fail_after(90):
            async with cluster(
                ("node-a", "node-b"), lease_ttl_s=2.0, extra_env=UNLIMITED_ENV
            ) as nodes:
                node_a, node_b = nodes
                pairs = await open_pairs([node_a.base, node_b.base], node_a.banner, PAIRS, progress)
                assert _lease_holders(node_a.database_url) == ["node-a"]
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    start_traffic(pairs, stop, nursery)
                    await progress.more(WARM_UP)
                    os.kill(node_a.pid, signal.SIGKILL)
                    await _every_client_sends_again(pairs, progress)  # node-b took over
                    stop.set()
                assert _lease_holders(node_b.database_url) == ["node-b"]
                await check_nothing_lost(node_b.database_url, pairs)
                # the killed node's own sockets ended without a close frame (1006)
                assert unclear(pairs, killed=True) == {"errors": {}, "closes": {}}
    finally:
        report(pairs, _logs(nodes))


async def test_draining_the_owner_under_traffic_hands_over_and_sockets_go_away_with_1001() -> None:
    """SIGTERM on the owner mid-traffic: every socket it served, its own and those the other
    node served through it, closes with 1001 (going away), and the other node takes over
    at once: the lease (60 s) was handed back, not left to expire."""
    progress, pairs, nodes = Progress(), list[Pair](), list[Node]()
    try:
        with trio.fail_after(90):
            async with cluster(
                ("node-a", "node-b"), lease_ttl_s=60.0, extra_env=UNLIMITED_ENV
            ) as nodes:
                node_a, node_b = nodes
                pairs = await open_pairs([node_a.base, node_b.base], node_a.banner, PAIRS, progress)
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    start_traffic(pairs, stop, nursery)
                    await progress.more(WARM_UP)
                    os.kill(node_a.pid, signal.SIGTERM)
                    with trio.fail_after(20):  # an expired lease would take 40 s and more
                        await _every_client_sends_again(pairs, progress)
                    stop.set()
                assert _lease_holders(node_b.database_url) == ["node-b"]
                await check_nothing_lost(node_b.database_url, pairs)
                assert unclear(pairs) == {"errors": {}, "closes": {}}
                # every client was served by node-a, locally or through the bus
                assert all(c.closes[1001] >= 1 for c in clients(pairs))
    finally:
        report(pairs, _logs(nodes))


async def test_a_redis_restart_under_traffic_acknowledges_only_commits_and_recovers() -> None:
    """Redis killed mid-traffic: ``/readyz`` says the bus is down on both nodes; the sockets the
    owner serves itself go on (the database is there); sockets served through the bus hear
    ``overloaded``/``unavailable`` or end with 1013; Redis back: everyone sends again."""
    redis = PrivateRedis(free_port())
    await redis.start()
    progress, pairs, nodes = Progress(), list[Pair](), list[Node]()
    try:
        with trio.fail_after(90):
            async with cluster(
                ("node-a", "node-b"), redis_url=redis.url, extra_env=UNLIMITED_ENV
            ) as nodes:
                node_a, node_b = nodes
                pairs = await open_pairs([node_a.base, node_b.base], node_a.banner, PAIRS, progress)
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    start_traffic(pairs, stop, nursery)
                    await progress.more(WARM_UP)
                    await redis.kill()
                    for node in nodes:
                        await _until_ready(node.base, "bus", ok=False)
                    await progress.more(2 * PAIRS)  # the owner's own sockets go on
                    await redis.start()  # same port: the nodes subscribe again by themselves
                    for node in nodes:
                        await _until_ready(node.base, "bus", ok=True)
                    await _every_client_sends_again(pairs, progress)
                    stop.set()
                assert _lease_holders(node_a.database_url) == ["node-a"]
                await check_nothing_lost(node_a.database_url, pairs)
                assert unclear(pairs) == {"errors": {}, "closes": {}}
    finally:
        report(pairs, _logs(nodes))
        await redis.kill()


async def test_a_postgres_outage_under_traffic_acknowledges_nothing_and_recovers() -> None:
    """PostgreSQL refuses connections for 30 s mid-traffic: ``/readyz`` says the database is
    down on both nodes, clients hear ``storage_unavailable`` (or ``overloaded`` through the
    bus, or their socket ends 1013 and they resume), no acknowledgement comes while it is
    down; the leases run out meanwhile, and no node commits without holding one (the append
    checks the epoch). When it is back the cluster serves every client again by itself, with
    one owner."""
    proxy = OutageProxy(pg_url_or_skip())
    progress, pairs, nodes = Progress(), list[Pair](), list[Node]()
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as services:
                await services.start(proxy.serve)
                async with cluster(
                    ("node-a", "node-b"),
                    lease_ttl_s=3.0,
                    extra_env=UNLIMITED_ENV,
                    database_via={"node-a": proxy, "node-b": proxy},
                ) as nodes:
                    node_a, node_b = nodes
                    bases = [node_a.base, node_b.base]
                    pairs = await open_pairs(bases, node_a.banner, PAIRS, progress)
                    stop = trio.Event()
                    async with trio.open_nursery() as nursery:
                        start_traffic(pairs, stop, nursery)
                        await progress.more(WARM_UP)
                        proxy.cut(refuse=True)
                        cut_at = trio.current_time()
                        for base in bases:
                            await _until_ready(base, "database", ok=False)
                        # what committed before the cut is answered within the storage
                        # deadline; after that no acknowledgement until the database is back
                        await trio.sleep_until(cut_at + 2 * STORAGE_TIMEOUT_S)
                        during = progress.acked
                        await trio.sleep_until(cut_at + OUTAGE_S)  # the outage's length
                        assert progress.acked == during, "acknowledged while the database was down"
                        proxy.restore()
                        for base in bases:
                            await _until_ready(base, "database", ok=True)
                        await _every_client_sends_again(pairs, progress)
                        stop.set()
                    holders = _lease_holders(node_a.database_url)
                    assert len(holders) == 1, holders  # one owner, whichever it is now
                    await check_nothing_lost(node_a.database_url, pairs)
                    assert unclear(pairs) == {"errors": {}, "closes": {}}
                    assert any(c.errors["storage_unavailable"] for c in clients(pairs))
                services.cancel_scope.cancel()
    finally:
        report(pairs, _logs(nodes))


async def test_a_node_cut_off_from_postgres_hands_its_workspace_to_the_other() -> None:
    """Only the owner loses PostgreSQL, for 30 s: it can neither renew its lease nor commit.
    Once its lease ran out it stops serving the workspace (its sockets end, 1013), the other
    node takes the workspace over (new epoch) and serves every client, the cut-off node's
    clients too once they reach it (a load balancer sends them where ``/readyz`` is 200).
    When the database is back, the former owner serves nothing of it and commits nothing."""
    proxy = OutageProxy(pg_url_or_skip())
    progress, pairs, nodes = Progress(), list[Pair](), list[Node]()
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as services:
                await services.start(proxy.serve)
                async with cluster(
                    ("node-a", "node-b"),
                    lease_ttl_s=3.0,
                    extra_env=UNLIMITED_ENV,
                    database_via={"node-a": proxy},
                ) as nodes:
                    node_a, node_b = nodes
                    pairs = await open_pairs(
                        [node_a.base, node_b.base], node_a.banner, PAIRS, progress
                    )
                    assert _lease_holders(node_a.database_url) == ["node-a"]
                    stop = trio.Event()
                    async with trio.open_nursery() as nursery:
                        start_traffic(pairs, stop, nursery)
                        await progress.more(WARM_UP)
                        proxy.cut(refuse=True)
                        cut_at = trio.current_time()
                        await _until_ready(node_a.base, "database", ok=False)
                        with trio.fail_after(OUTAGE_S - 10):  # well within the outage
                            await _every_client_sends_again(pairs, progress)
                        assert _lease_holders(node_b.database_url) == ["node-b"]
                        await trio.sleep_until(cut_at + OUTAGE_S)  # the outage's length
                        assert _lease_holders(node_b.database_url) == ["node-b"]
                        await _every_client_sends_again(pairs, progress)  # still served
                        proxy.restore()
                        await _until_ready(node_a.base, "database", ok=True)
                        await _every_client_sends_again(pairs, progress)
                        stop.set()
                    assert _lease_holders(node_b.database_url) == ["node-b"]
                    await check_nothing_lost(node_b.database_url, pairs)
                    assert unclear(pairs) == {"errors": {}, "closes": {}}
                services.cancel_scope.cancel()
    finally:
        report(pairs, _logs(nodes))
