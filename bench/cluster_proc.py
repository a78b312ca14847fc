"""CPU of everything that serves a cluster bench: server process trees, their PostgreSQL
backends, Redis; and the throwaway PostgreSQL schema and Redis prefix of one run.

Why backends and not the whole postmaster tree: the PostgreSQL server is shared with other
programs on a development machine, and its tree's CPU would count their queries too. A
backend belongs to the server when the other end of its connection is a socket held by one of
the server's processes (``/proc/<pid>/fd`` socket inodes, matched in ``/proc/net/tcp*``);
``pg_stat_activity`` gives the backend pid of each client port. Redis has one process and no
per-client CPU: its ``INFO cpu`` delta is counted whole, so other users of a shared Redis
inflate it (the bench notes this).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

import trio

from bench.target import TargetError, read_cpu_seconds

PG_PORT_DEFAULT = 5432
PSQL_TIMEOUT_S = 30.0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants now (a ``--workers`` parent and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each live pid (a gone pid is left out)."""
    found = {}
    for pid in pids:
        seconds = read_cpu_seconds(pid)
        if seconds is not None:
            found[pid] = seconds
    return found


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def client_ports_to(pids: Iterable[int], remote_port: int) -> set[int]:
    """Local ports of the TCP connections that ``pids`` hold open to ``remote_port``."""
    inodes = _socket_inodes(pids)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote = int(fields[2].rsplit(":", 1)[1], 16) if len(fields) > 9 else None
            if remote == remote_port and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def psql(url: str, sql: str) -> str:
    """Run SQL with the ``psql`` client (unaligned, tuples only)."""
    with trio.fail_after(PSQL_TIMEOUT_S):
        done = await trio.run_process(
            ["psql", url.split("?", 1)[0], "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if done.returncode != 0:
        raise TargetError(f"psql failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


async def backend_pids(url: str, server_pids: Iterable[int]) -> set[int]:
    """The PostgreSQL backends serving connections of ``server_pids``."""
    pg_port = urlsplit(url).port or PG_PORT_DEFAULT
    ports = client_ports_to(server_pids, pg_port)
    if not ports:
        return set()
    rows = await psql(
        url,
        "SELECT pid FROM pg_stat_activity WHERE client_port IN "
        f"({','.join(str(p) for p in sorted(ports))})",
    )
    return {int(line) for line in rows.split()}


async def redis_cpu_seconds(url: str) -> float | None:
    """Redis's own user + system CPU (``INFO cpu``), None when it cannot be read."""
    parts = urlsplit(url)
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
            async with stream:
                await stream.send_all(b"INFO cpu\r\n")
                data = b""
                while b"used_cpu_user:" not in data or not data.endswith(b"\r\n"):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
    except (OSError, trio.TooSlowError):
        return None
    fields = dict(
        line.split(":", 1) for line in data.decode(errors="replace").splitlines() if ":" in line
    )
    try:
        return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])
    except (KeyError, ValueError):
        return None


class CpuMeter:
    """CPU seconds spent between ``start`` and ``stop`` by the server tree under ``root``, its
    PostgreSQL backends and (with ``redis_url``) Redis. A backend that connected in between
    counts from zero; pids are found again at ``stop``."""

    def __init__(self, *, root: int, url: str, redis_url: str | None) -> None:
        self.root, self.url, self.redis_url = root, url, redis_url
        self.server_pids: list[int] = []
        self.backends: set[int] = set()
        self._cpu0: dict[int, float] = {}
        self._redis0: float | None = None

    async def _find(self) -> None:
        self.server_pids = sorted(set(self.server_pids) | set(process_tree(self.root)))
        self.backends |= await backend_pids(self.url, self.server_pids)

    async def start(self) -> None:
        await self._find()
        self._cpu0 = cpu_of([*self.server_pids, *self.backends])
        self._redis0 = await redis_cpu_seconds(self.redis_url) if self.redis_url else None

    async def stop(self) -> dict[str, float]:
        """Seconds per part since ``start``: ``server``, ``postgres``, ``redis``."""
        redis1 = await redis_cpu_seconds(self.redis_url) if self.redis_url else None
        await self._find()
        cpu1 = cpu_of([*self.server_pids, *self.backends])

        def delta(pids: Iterable[int]) -> float:
            return sum(cpu1[p] - self._cpu0.get(p, 0.0) for p in pids if p in cpu1)

        redis = 0.0 if redis1 is None or self._redis0 is None else redis1 - self._redis0
        return {
            "server": delta(self.server_pids),
            "postgres": delta(self.backends),
            "redis": redis,
        }

    async def idle(self, window_s: float) -> float:
        """CPU seconds of everything measured over ``window_s`` of quiet."""
        await self.start()
        await trio.sleep(window_s)
        return sum((await self.stop()).values())


class Schema:
    """A fresh PostgreSQL schema for one run (``search_path`` in the URL), dropped after."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.name = "bench_" + secrets.token_hex(6)
        sep = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{sep}search_path={self.name}"

    async def create(self) -> None:
        await psql(self.base_url, f"CREATE SCHEMA {self.name}")

    async def drop(self) -> None:
        with trio.CancelScope(shield=True):
            await psql(
                self.base_url,
                f"DROP SCHEMA IF EXISTS {self.name} CASCADE; "
                f"DROP SCHEMA IF EXISTS {self.name}_vault CASCADE",
            )

    async def lease_holders(self, prefix: str = "workspace:") -> list[str]:
        """The holders of the unexpired leases named ``prefix...``, one per lease (``node:``:
        the live nodes)."""
        rows = await psql(
            self.base_url,
            f"SELECT holder FROM {self.name}.cluster_leases WHERE name LIKE '{prefix}%'"
            " AND expires_at > extract(epoch from clock_timestamp())",
        )
        return rows.split()

    async def conversations_per_workspace(self) -> dict[str, int]:
        """Workspace id -> conversations stored in it."""
        rows = await psql(
            self.base_url,
            f"SELECT workspace_id, count(*) FROM {self.name}.conversations GROUP BY workspace_id",
        )
        found = (line.split("|") for line in rows.splitlines() if line)
        return {workspace: int(count) for workspace, count in found}
