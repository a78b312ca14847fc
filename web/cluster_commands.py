"""``livechat cluster status``: the nodes of a cluster, what each owns and how the bus answers.

The nodes are read from the database: every node holding its membership lease (``node:<id>``,
web/placement.py), even with no workspace yet, and every holder of a live workspace lease, with
how many workspaces each owns (what placement balances). With ``--bus-url`` each is asked over
the bus for its counts, and the round trip is the bus lag that node shows now; each node also
tells its own recent round trip (an average of its forwarded requests and rate-limit syncs: what
its sockets wait for the bus; ``livechat_bus_request_seconds`` in its ``/metrics`` has the
distribution). A node that holds leases but does not answer is listed as such: it is stopped,
partitioned or killed, and its workspaces move once its leases expire.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

import trio

from storage import MasterKeyRing, open_storage
from web import strictjson
from web.bus import Bus, BusError
from web.cli import add_database_options, settings_from_args
from web.errors import ConfigError
from web.ownership import NODE_LEASE_PREFIX, WORKSPACE_LEASE_PREFIX
from web.services import master_keys
from web.settings import Settings

ASK_TIMEOUT_S = 2.0


def register(subparsers: Any) -> None:
    cluster = subparsers.add_parser("cluster", help="a cluster's nodes, leases and bus")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="TASK", required=True)
    status = sub.add_parser("status", help="nodes, workspaces owned by each, bus round trip")
    add_database_options(status)
    status.add_argument("--bus-url", help="redis://... (LIVECHAT_BUS_URL); without: leases only")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(
            args,
            database_url=args.database_url,
            bus_url=args.bus_url,
            master_key_file=args.master_key_file,
            files_dir=args.files_dir,
        )
        keyring = master_keys(settings)  # the database refuses to open without its key
    except ConfigError as err:
        print(f"livechat cluster: error: {err}", file=sys.stderr)
        return 2
    nodes = trio.run(_collect, settings, keyring)
    if args.json:
        print(strictjson.dumps({"nodes": nodes}))
        return 0
    if not nodes:
        print("no node holds a lease (no cluster running)")
    for node in nodes:
        line = f"{node['node']}: {node['leases']} workspace lease(s)"
        if node.get("listening") is False:
            line += ", NOT answering on the bus"
        elif "round_trip_ms" in node:
            line += (
                f", bus round trip {node['round_trip_ms']:.1f} ms, serving"
                f" {node['hosted']} socket(s) of other nodes, {node['proxies']} proxied away"
            )
            if node.get("own_round_trip_ms") is not None:
                line += f", its own bus round trip {node['own_round_trip_ms']:.1f} ms"
        print(line)
    return 0


async def _collect(settings: Settings, keyring: MasterKeyRing) -> list[dict[str, Any]]:
    async with open_storage(settings.storage.database_url, keyring=keyring) as storage:
        members = await storage.lease_counts(NODE_LEASE_PREFIX)
        counts = await storage.lease_counts(WORKSPACE_LEASE_PREFIX)
    nodes: list[dict[str, Any]] = [
        {"node": n, "leases": counts.get(n, 0)} for n in sorted(set(members) | set(counts))
    ]
    cluster = settings.cluster
    if cluster.bus_url is None or not nodes:
        return nodes
    bus = Bus(cluster.bus_url, f"cli-{secrets.token_hex(4)}", prefix=cluster.bus_prefix)

    async def no_requests(message: dict[str, Any]) -> None:
        return None

    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve, no_requests, lambda message: None)
        for node in nodes:
            started = trio.current_time()
            try:
                with trio.fail_after(ASK_TIMEOUT_S):
                    answer = await bus.request(node["node"], "status", {})
            except (BusError, trio.TooSlowError):
                node["listening"] = False
                continue
            node["listening"] = True
            node["round_trip_ms"] = round((trio.current_time() - started) * 1000, 2)
            node.update({k: answer[k] for k in ("hosted", "proxies", "owned")})
            own_s = answer.get("bus_round_trip_s")  # None: it has not waited for the bus yet
            node["own_round_trip_ms"] = None if own_s is None else round(own_s * 1000, 2)
        nursery.cancel_scope.cancel()
    return nodes
