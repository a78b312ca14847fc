"""The server's supervision tree: the root ``livechat`` and the children the web layer owns.

::

    livechat       supervisor, rest_for_one (supervisor_max_restarts in supervisor_period_s)
    ├─ storage     StorageChild: opens the database, attaches it to the StorageHandle, watches it
    ├─ cluster     only with a bus (web/cluster.py, ClusterService): the bus, lease renewal
    ├─ engine      ChatEngine: the engine's own supervisor (registries, hub, ticker)
    ├─ housekeeping
    ├─ delivery    supervisor, one_for_one (DELIVERY_MAX_RESTARTS in DELIVERY_PERIOD_S)
    │  ├─ mail       the mail outbox and the inbox scan (web/mail.py)
    │  └─ webhooks   the webhook feeder and sender (web/webhooks.py)
    └─ limits      only with a bus; supervisor, one_for_one (LIMITS_MAX_RESTARTS in LIMITS_PERIOD_S)
       └─ sync       the shared rate limits' sync with Redis (web/ratelimit.py, SharedLimits)

Why storage is a child, and how nobody keeps a stale handle: every user of storage holds one
``StorageHandle`` (storage/handle.py), and only this child puts a backend behind it. When the
backend crashes (its group committer, a connection it cannot recover, or an injected fault), the
child's ``serve`` raises, the backend is closed, and the root restarts the child, which opens a
new backend and attaches it. The root is rest_for_one, so the engine, housekeeping and delivery
are restarted after it: the engine's actors rebuild their state from the reopened database
(a batch whose commit the crash left undecided is read back as stored, never assumed), and the
web layer, mail and webhooks, which hold the handle too, reach the new backend on their next
call. A database that is merely unreachable is not a crash: the watch reports it (``/readyz``,
the tree) and callers get ``storage_unavailable`` until it answers again; reopening would not
bring it back, and restarting for it would only use up the root's intensity.

Mail and webhooks sit under their own one_for_one ``delivery`` supervisor, late in the root: a
crash of either restarts it alone (its durable outbox says what is left to send), chats are not
touched, and only past the delivery intensity does the root restart ``delivery`` (and, after
it, only the rate-limit sync, which loses one batch at most).

The rate-limit sync sits under its own ``limits`` supervisor, for the same reasons: a bug in one
sync restarts the loop alone (the hits that sync carried count on their node only), without
using up the root's intensity, which is kept for storage; it is last, after ``cluster``, whose
bus it syncs over, so a restart of the cluster child restarts it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from engine import (
    ChatEngine,
    EngineMetrics,
    InjectedFault,
    RestartStrategy,
    RestartType,
    ServiceSpec,
    Supervisor,
    TaskService,
    TreeNode,
)
from storage import Storage, StorageHandle
from web.cluster import ClusterService
from web.ratelimit import SharedLimits

log = logging.getLogger("livechat.supervision")

STORAGE_WATCH_INTERVAL_S = 10.0  # how often the storage child checks the database can commit
STORAGE_WATCH_TIMEOUT_S = 5.0
DELIVERY_MAX_RESTARTS = 3  # mail or webhooks crashing more often than this ...
DELIVERY_PERIOD_S = 60.0  # ... in this window escalates to the root
LIMITS_MAX_RESTARTS = 3  # the rate-limit sync crashing more often than this ...
LIMITS_PERIOD_S = 60.0  # ... in this window escalates to the root
# The operators' fault injection: which service child of the root each kind names.
SERVICE_FAULTS: dict[str, tuple[str, ...]] = {
    "storage": ("storage",),
    "mail": ("delivery", "mail"),
    "webhooks": ("delivery", "webhooks"),
}

OpenBackend = Callable[[], AbstractAsyncContextManager[Storage]]


class StorageChild:
    """The root's ``storage`` child; see the module docstring.

    ``serve`` opens a backend with ``open_backend``, attaches it to ``handle`` and then checks
    every ``STORAGE_WATCH_INTERVAL_S`` that the database can commit (``Storage.check_ready``),
    logging each change and showing it in the tree. ``drain`` stops the watch; the backend then
    commits what is queued and closes (it is the first child, so the last to stop).
    """

    def __init__(self, handle: StorageHandle, open_backend: OpenBackend) -> None:
        self.handle = handle
        self._open_backend = open_backend
        self.status = "stopped"
        self._scope: trio.CancelScope | None = None
        self._fault = False
        self._done = trio.Event()
        self._done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._done = trio.Event()
        self._fault = False
        try:
            async with self._open_backend() as backend:
                self.handle.attach(backend)
                if self.handle.generation > 1:
                    log.warning("storage: reopened (open %d)", self.handle.generation)
                self.status = "ready"
                try:
                    with trio.CancelScope() as self._scope:
                        task_status.started()
                        while True:
                            await trio.sleep(STORAGE_WATCH_INTERVAL_S)
                            await self.check()
                finally:
                    self._scope = None
                    self.handle.detach()  # callers now get StorageUnavailable, not a closed one
                    self.status = "stopped"
            if self._fault:
                raise InjectedFault("fault injected into storage")
        finally:
            self._done.set()

    async def check(self) -> None:
        try:
            with trio.fail_after(STORAGE_WATCH_TIMEOUT_S):
                await self.handle.storage.check_ready()
            status = "ready"
        except Exception as err:  # a probe reports any failure, it never raises
            status = f"not_ready:{type(err).__name__}"
        if status != self.status:
            log.warning("storage: %s (was %s)", status, self.status)
            self.status = status

    async def drain(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    def inject_fault(self) -> bool:
        """Crash the child as a backend failure would: the backend closes and ``serve`` raises
        ``InjectedFault``, so the root reopens it. False if it is not serving."""
        if self._scope is None or self._fault:
            return False
        self._fault = True
        self._scope.cancel()
        return True

    def snapshot(self, restart: str | None = None) -> TreeNode:
        return TreeNode(name="storage", kind="service", restart=restart, state=self.status)


def limits_supervisor(limits: SharedLimits, *, metrics: EngineMetrics) -> Supervisor:
    """The ``limits`` supervisor: ``SharedLimits.serve`` as its one child, ``sync``."""
    return Supervisor(
        RestartStrategy.ONE_FOR_ONE,
        LIMITS_MAX_RESTARTS,
        LIMITS_PERIOD_S,
        name="limits",
        metrics=metrics,
        children=[ServiceSpec("sync", TaskService("sync", limits.serve))],
    )


def build_tree(
    *,
    storage: StorageChild,
    cluster: ClusterService | None = None,
    limits: SharedLimits | None = None,
    engine: ChatEngine,
    housekeeping: TaskService,
    mail: TaskService,
    webhooks: TaskService,
    max_restarts: int,
    period_s: float,
    metrics: EngineMetrics,
) -> Supervisor:
    """The root supervisor ``livechat`` with its children in start order (see above);
    ``cluster`` and ``limits`` only in a cluster (with a bus)."""
    delivery = Supervisor(
        RestartStrategy.ONE_FOR_ONE,
        DELIVERY_MAX_RESTARTS,
        DELIVERY_PERIOD_S,
        name="delivery",
        metrics=metrics,
        children=[ServiceSpec("mail", mail), ServiceSpec("webhooks", webhooks)],
    )
    return Supervisor(
        RestartStrategy.REST_FOR_ONE,
        max_restarts,
        period_s,
        name="livechat",
        metrics=metrics,
        children=[
            ServiceSpec("storage", storage),
            # before the engine: it drains after it (leases released once the engine committed)
            *([ServiceSpec("cluster", cluster)] if cluster is not None else []),
            # transient: a crash restarts it; its normal return is a deliberate shutdown
            ServiceSpec("engine", engine, RestartType.TRANSIENT),
            ServiceSpec("housekeeping", housekeeping),
            ServiceSpec("delivery", delivery),
            *(
                [ServiceSpec("limits", limits_supervisor(limits, metrics=metrics))]
                if limits is not None
                else []
            ),
        ],
    )


def inject_service_fault(root: Supervisor, kind: str) -> bool:
    """Crash the service child that ``kind`` names (``SERVICE_FAULTS``) as a bug would; its
    supervisor restarts it. False if it is not running now."""
    *parents, name = SERVICE_FAULTS[kind]
    sup = root
    for parent in parents:
        nested = sup.service(parent)
        assert isinstance(nested, Supervisor)
        sup = nested
    service: Any = sup.service(name)
    return bool(service.inject_fault())
