"""What a visitor's WebSocket connect needs of its workspace, held in memory per process.

Every visitor upgrade looked up its widget key and the IP's bans, and a returning visitor's
hello its bans again: two or three storage round trips (thread hand-offs on SQLite) before the
first frame. ``WorkspaceCache`` keeps, for each workspace in use, its row and its bans in force
(IP addresses and visitor ids, each with its expiry), so these checks are dictionary lookups.

Freshness: every change goes through ``web/access.py``, which drops the workspace's entry here
at once and, in a cluster, on every other node as the bus delivers the event (well within a
second): a workspace changed (``workspace_changed``, ``workspace_updated``), suspended
(``close_workspace``), a visitor banned or erased (``close_visitor``), a ban lifted
(``workspace_updated``). A ban's expiry needs no event: it is compared with the clock at each
check. An entry older than ``MAX_AGE_S`` is read again, which bounds how long a change whose
event a node missed (the bus is at-most-once) goes unseen there.

A read that started before a drop is not kept (``_epoch``): it may have seen the row as it was.
Unknown keys and suspended workspaces are not cached (each such upgrade reads storage, as
before), so a new workspace or a resumed one is served at once. Memory: at most
``MAX_WORKSPACES`` entries (least recently used go first); a workspace with more than
``MAX_BANS`` bans in force keeps its row here and asks storage about bans.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from storage import Ban, BanKind, Storage, Workspace, WorkspaceStatus

MAX_WORKSPACES = 1000  # entries kept; the least recently used is dropped first
MAX_BANS = 10_000  # bans in force one entry holds; above it, is_banned asks storage
MAX_AGE_S = 10.0  # an entry is read again after this, even without an event

Expiry = float | None  # a ban's expires_at: None never expires


@attrs.frozen
class BanSet:
    """A workspace's bans in force when read: value -> expiry, per kind."""

    ips: dict[str, Expiry]
    visitors: dict[str, Expiry]

    @classmethod
    def of(cls, bans: Iterable[Ban], now: float) -> BanSet:
        ips: dict[str, Expiry] = {}
        visitors: dict[str, Expiry] = {}
        for ban in bans:
            if ban.expires_at is not None and ban.expires_at <= now:
                continue
            into = ips if ban.kind is BanKind.IP else visitors
            into[ban.value] = _later(into.get(ban.value, 0.0), ban.expires_at)
        return cls(ips=ips, visitors=visitors)

    def __len__(self) -> int:
        return len(self.ips) + len(self.visitors)

    def matches(self, *, visitor_id: str | None, ip: str | None, now: float) -> bool:
        """As ``Storage.is_banned``: an unexpired ban on the visitor id or the IP."""
        for value, found in ((visitor_id, self.visitors), (ip, self.ips)):
            if value is not None and value in found:
                expires_at = found[value]
                if expires_at is None or expires_at > now:
                    return True
        return False


def _later(a: Expiry, b: Expiry) -> Expiry:
    """Two bans on one value: the one that lasts longer decides."""
    return None if a is None or b is None else max(a, b)


@attrs.frozen
class _Entry:
    workspace: Workspace
    bans: BanSet | None  # None: too many to hold, ask storage
    read_at: float  # on the age clock


class WorkspaceCache:
    """Widget key -> workspace, and each cached workspace's bans; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
        max_workspaces: int = MAX_WORKSPACES,
    ) -> None:
        self.storage = storage
        self.max_workspaces = max_workspaces
        self.clock = clock  # compared with ``Ban.expires_at`` (storage stamps with time.time)
        self.age_clock: Callable[[], float] = time.monotonic  # an entry's age, for MAX_AGE_S
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # by workspace id, LRU order
        self._by_key: dict[str, str] = {}  # widget key -> workspace id
        self._epoch = 0  # drops so far: a read that saw another value is not kept

    def __len__(self) -> int:
        return len(self._entries)

    async def by_widget_key(self, key: str) -> Workspace | None:
        """The workspace of ``key`` (whatever its status), or None if no workspace has it."""
        entry = self._fresh(self._by_key.get(key))
        if entry is not None and entry.workspace.widget_key == key:
            return entry.workspace
        epoch = self._epoch
        workspace = await self.storage.get_workspace_by_widget_key(key)
        if workspace is None or workspace.status is not WorkspaceStatus.ACTIVE:
            return workspace
        bans = await self.storage.list_bans(workspace.id)
        if epoch == self._epoch:  # nothing was dropped while reading: keep it
            ban_set = BanSet.of(bans, self.clock())
            held = ban_set if len(ban_set) <= MAX_BANS else None
            self._keep(_Entry(workspace, held, self.age_clock()))
        return workspace

    async def is_banned(self, workspace_id: str, *, visitor_id: str | None, ip: str | None) -> bool:
        """``Storage.is_banned``, from memory when the workspace is cached."""
        entry = self._fresh(workspace_id)
        if entry is None or entry.bans is None:
            return await self.storage.is_banned(workspace_id, visitor_id=visitor_id, ip=ip)
        return entry.bans.matches(visitor_id=visitor_id, ip=ip, now=self.clock())

    def forget(self, workspace_id: str) -> None:
        """The workspace's row or bans changed: the next connect reads them again (and a read
        in flight now is not kept)."""
        self._epoch += 1
        self._drop(workspace_id)

    def _drop(self, workspace_id: str) -> None:
        entry = self._entries.pop(workspace_id, None)
        if entry is not None:
            self._by_key.pop(entry.workspace.widget_key, None)

    def _fresh(self, workspace_id: str | None) -> _Entry | None:
        if workspace_id is None:
            return None
        entry = self._entries.get(workspace_id)
        if entry is None:
            return None
        if self.age_clock() - entry.read_at >= MAX_AGE_S:
            self._drop(workspace_id)
            return None
        self._entries.move_to_end(workspace_id)
        return entry

    def _keep(self, entry: _Entry) -> None:
        ws = entry.workspace
        self._drop(ws.id)  # its key may have changed since the last read
        self._entries[ws.id] = entry
        self._by_key[ws.widget_key] = ws.id
        while len(self._entries) > self.max_workspaces:
            _, oldest = self._entries.popitem(last=False)
            self._by_key.pop(oldest.workspace.widget_key, None)
