"""Overload policy: push back on senders first, keep receivers flowing (docs/protocol.md).

When the whole process is behind, every outbox grows at once, readers included. Cutting those
receivers (1013) would turn a slow moment into a reconnect storm and late deliveries, so the
server sheds load where it enters instead: while ``OverloadGate.shedding`` is set, chat messages
are answered ``overloaded`` with ``retry_after_s`` before they reach the engine, and the clients
resend them later with the same ``client_msg_id``. A receiver is cut only when it is truly slow:
its outbox backed up and no socket write completed for ``ws_slow_consumer_grace_s`` (see
``SocketSession.deadline_check``), or its outbox reached the hard cap ``ws_outbox_max_size``.

The gate is re-evaluated once per tick of the shared socket timer (``SocketRegistry.watch``),
from two signals that say "the process is behind", not "one peer is slow":

- the tick's own lateness (event-loop lag) reached ``overload_loop_lag_s``;
- at least ``overload_backed_up_fraction`` of the sockets (and at least one) have a backed-up
  outbox that is still being written (their peers read; the server cannot keep up).
"""

from __future__ import annotations

import logging
import math
import random

import attrs

from web.settings import Settings

log = logging.getLogger("livechat.overload")


@attrs.define(eq=False)
class OverloadGate:
    """Whether senders are being pushed back right now, and for how long they should wait."""

    loop_lag_s: float
    backed_up_fraction: float
    retry_after_s: float
    shedding: bool = False
    reason: str = ""
    ticks_shedding: int = 0  # for metrics: ticks spent shedding since start
    _rng: random.Random = attrs.field(factory=random.Random)

    @classmethod
    def from_settings(cls, settings: Settings) -> OverloadGate:
        return cls(
            loop_lag_s=settings.overload.loop_lag_s,
            backed_up_fraction=settings.overload.backed_up_fraction,
            retry_after_s=settings.overload.retry_after_s,
        )

    def update(self, *, lag_s: float, behind: int, sockets: int) -> None:
        """Re-evaluate once per tick: ``behind`` sockets are backed up but still draining."""
        was = self.shedding
        needed = max(1, math.ceil(self.backed_up_fraction * sockets))
        if self.loop_lag_s > 0 and lag_s >= self.loop_lag_s:
            self.shedding, self.reason = True, f"event loop {lag_s:.2f} s late"
        elif behind >= needed:
            self.shedding, self.reason = True, f"{behind} of {sockets} outboxes backed up"
        else:
            self.shedding, self.reason = False, ""
        self.ticks_shedding += self.shedding
        if self.shedding and not was:
            log.warning("overloaded: refusing chat messages with retry_after_s (%s)", self.reason)
        elif was and not self.shedding:
            log.warning("no longer overloaded: accepting chat messages again")

    def retry_after(self) -> float:
        """The wait to tell a refused sender, jittered so that retries do not come back in step."""
        return round(self.retry_after_s * (0.5 + self._rng.random()), 3)
