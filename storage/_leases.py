"""Leases with a fencing epoch: which node owns a conversation or a workspace router.

A lease row (``cluster_leases``, migration 0011) names its holder, an epoch and an expiry on the
database's clock (nodes' clocks never matter). Acquiring succeeds when the lease is free,
expired, or already this holder's, and always raises the epoch by one (a restarted node with
the same id fences off its former incarnation). Renewing extends every lease a holder still
has in one statement, keeping their epochs; releasing expires a lease at once but keeps its row,
so epochs never go back.

Fencing: an append carries ``Fence(name, epoch)``; inside the append transaction
(``fence_epochs`` then ``lease_lost``, called by ``storage._appends``) the lease rows are read
with a share lock and a submission whose epoch is not the current one is refused whole with
``LeaseLost``. A takeover's UPDATE waits for an append holding that lock, so an append either
commits before the takeover or is refused after it: a paused former owner can never commit.
Expiry alone does not refuse: until another node takes the lease over nobody else committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from storage import api
from storage._sql import Dialect, Program, Q, Result
from storage.errors import LeaseLost

T = TypeVar("T")

_NOW = {
    "postgresql": "extract(epoch from clock_timestamp())::double precision",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def _now(dialect: Dialect) -> str:
    return _NOW[dialect.name]


def _lease(row: Mapping[str, object]) -> api.Lease:
    return api.Lease(
        name=str(row["name"]),
        holder=str(row["holder"]),
        epoch=int(row["epoch"]),  # type: ignore[call-overload]
        expires_at=float(row["expires_at"]),  # type: ignore[arg-type]
    )


_COLUMNS = "name, holder, epoch, expires_at"


def acquire_program(
    dialect: Dialect, name: str, holder: str, ttl_s: float
) -> Program[api.Lease | None]:
    """Take ``name`` for ``holder`` for ``ttl_s`` with a new epoch; None while another holds it."""
    now = _now(dialect)
    result: Result = yield Q(
        f"INSERT INTO cluster_leases AS l ({_COLUMNS}) VALUES (?, ?, 1, {now} + ?)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1,"
        " expires_at = excluded.expires_at"
        f" WHERE l.expires_at <= {now} OR l.holder = excluded.holder"
        f" RETURNING {_COLUMNS}",
        (name, holder, ttl_s),
    )
    row = result.one()
    return None if row is None else _lease(row)


def renew_program(dialect: Dialect, holder: str, ttl_s: float) -> Program[list[api.Lease]]:
    """Extend every lease ``holder`` still has (epochs unchanged); returns them. A lease the
    caller thinks it holds and that is missing here was taken over."""
    result: Result = yield Q(
        f"UPDATE cluster_leases SET expires_at = {_now(dialect)} + ?"
        f" WHERE holder = ? AND expires_at > 0 RETURNING {_COLUMNS}",
        (ttl_s, holder),
    )
    return [_lease(row) for row in result.rows]


def release_program(lease: api.Lease) -> Program[bool]:
    """Expire ``lease`` now if it is still at its epoch (the row stays: epochs never go back)."""
    result: Result = yield Q(
        "UPDATE cluster_leases SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?",
        (lease.name, lease.holder, lease.epoch),
    )
    return result.rowcount == 1


def lease_program(dialect: Dialect, name: str) -> Program[api.Lease | None]:
    """The live lease on ``name`` (None when free or expired): who to forward a command to."""
    result: Result = yield Q(
        f"SELECT {_COLUMNS} FROM cluster_leases WHERE name = ? AND expires_at > {_now(dialect)}",
        (name,),
    )
    row = result.one()
    return None if row is None else _lease(row)


def leases_program(dialect: Dialect) -> Program[list[api.Lease]]:
    """Every live lease (``livechat cluster status``, tests)."""
    result: Result = yield Q(
        f"SELECT {_COLUMNS} FROM cluster_leases WHERE expires_at > {_now(dialect)} ORDER BY name"
    )
    return [_lease(row) for row in result.rows]


def lease_counts_program(dialect: Dialect, prefix: str) -> Program[dict[str, int]]:
    """How many live leases whose name starts with ``prefix`` each holder has (placement by
    load, ``livechat cluster status``): one grouped row per holder, whatever the lease count."""
    result: Result = yield Q(
        "SELECT holder, COUNT(*) AS n FROM cluster_leases"
        f" WHERE substr(name, 1, ?) = ? AND expires_at > {_now(dialect)} GROUP BY holder",
        (len(prefix), prefix),
    )
    return {str(row["holder"]): int(row["n"]) for row in result.rows}


# -- fencing inside the append transaction (storage/_appends.py)


def fence_epochs(
    batch: Sequence[Sequence[api.AppendRequest]], dialect: Dialect
) -> Program[dict[str, int]]:
    """The current epoch of every lease the batch is fenced with, share-locked until commit;
    no statement at all when nothing is fenced (one process, SQLite)."""
    names = sorted({r.fence.name for reqs in batch for r in reqs if r.fence is not None})
    if not names:
        return {}
    where, args = dialect.in_list("name", names)
    lock = " FOR SHARE" if dialect.name == "postgresql" else ""
    result: Result = yield Q(
        f"SELECT name, epoch FROM cluster_leases WHERE {where} ORDER BY name{lock}", args
    )
    return {str(row["name"]): int(row["epoch"]) for row in result.rows}


def lease_lost(
    requests: Sequence[api.AppendRequest], epochs: Mapping[str, int]
) -> LeaseLost | None:
    """``LeaseLost`` when any fence of this submission is no longer its lease's epoch."""
    for request in requests:
        fence = request.fence
        if fence is not None and epochs.get(fence.name) != fence.epoch:
            return LeaseLost(
                f"lease {fence.name!r} moved on from epoch {fence.epoch}"
                f" (now {epochs.get(fence.name)}): another node owns it"
            )
    return None


class LeaseStore:
    """The lease calls of ``SqlStorage``; relies on its driver methods and dialect."""

    _dialect: Dialect

    async def _write(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def _read(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> api.Lease | None:
        return await self._write(acquire_program(self._dialect, name, holder, ttl_s))

    async def renew_leases(self, holder: str, ttl_s: float) -> list[api.Lease]:
        return await self._write(renew_program(self._dialect, holder, ttl_s))

    async def release_lease(self, lease: api.Lease) -> bool:
        return await self._write(release_program(lease))

    async def lease(self, name: str) -> api.Lease | None:
        return await self._read(lease_program(self._dialect, name))

    async def leases(self) -> list[api.Lease]:
        return await self._read(leases_program(self._dialect))

    async def lease_counts(self, prefix: str) -> dict[str, int]:
        return await self._read(lease_counts_program(self._dialect, prefix))
