"""Limits on the reads that cost real work: exports (and backups) and full-text searches.

Each workspace gets at most ``rate_exports_per_hour`` exports and ``rate_searches_per_min``
searches (sliding windows, answered ``429 export_rate_limited`` / ``search_rate_limited`` with
``Retry-After``), and at most ``export_max_concurrent`` exports run at once on the server
(a ``trio.CapacityLimiter``; when all are taken the answer is ``429 exports_busy`` with
``Retry-After`` rather than a queue, so a client never holds a request open waiting).

An export slot is taken before the response starts and given back when its body has been
streamed, or the client went away (Quart closes the body iterator), so a slow download holds its
slot for as long as it really uses the database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import trio

from web.errors import TooManyRequests
from web.ratelimit import Clock, SlidingWindow
from web.settings import Settings

EXPORTS_BUSY_RETRY_AFTER_S = 5.0  # told to a client refused because every export slot is busy


class CostlyReads:
    """Per-workspace rate limits for exports and searches, and the server's export slots."""

    def __init__(
        self,
        *,
        exports_per_hour: int,
        searches_per_min: int,
        max_concurrent_exports: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self._exports = SlidingWindow(exports_per_hour, 3600.0, clock=clock)
        self._searches = SlidingWindow(searches_per_min, 60.0, clock=clock)
        self._slots = trio.CapacityLimiter(max(1, max_concurrent_exports))

    @classmethod
    def from_settings(cls, settings: Settings) -> CostlyReads:
        return cls(
            exports_per_hour=settings.rate_limits.exports_per_hour,
            searches_per_min=settings.rate_limits.searches_per_min,
            max_concurrent_exports=settings.rate_limits.export_max_concurrent,
        )

    @property
    def exports_running(self) -> int:
        return int(self._slots.borrowed_tokens)

    def search(self, workspace_id: str) -> None:
        """Count one search; raises ``TooManyRequests`` (search_rate_limited) over the limit."""
        wait_s = self._searches.hit(workspace_id)
        if wait_s > 0:
            raise TooManyRequests(
                "too many searches in this workspace; retry later",
                retry_after_s=wait_s,
                code="search_rate_limited",
            )

    def start_export(self, workspace_id: str) -> object:
        """Take an export slot and count the export; give the slot back with ``finish_export``
        (or stream through ``hold``). Raises ``TooManyRequests``: ``exports_busy`` when every
        slot is taken (the export is not counted), ``export_rate_limited`` over the limit."""
        if self._slots.available_tokens < 1:
            raise TooManyRequests(
                "the server is busy with other exports; retry later",
                retry_after_s=EXPORTS_BUSY_RETRY_AFTER_S,
                code="exports_busy",
            )
        wait_s = self._exports.hit(workspace_id)
        if wait_s > 0:
            raise TooManyRequests(
                "too many exports in this workspace; retry later",
                retry_after_s=wait_s,
                code="export_rate_limited",
            )
        slot = object()
        self._slots.acquire_on_behalf_of_nowait(slot)
        return slot

    def finish_export(self, slot: object) -> None:
        """Give ``slot`` back; idempotent."""
        if slot in self._slots.statistics().borrowers:
            self._slots.release_on_behalf_of(slot)

    async def hold(self, slot: object, lines: AsyncIterator[str]) -> AsyncIterator[str]:
        """Stream ``lines``, then give ``slot`` back (also when the client goes away)."""
        try:
            async for line in lines:
                yield line
        finally:
            self.finish_export(slot)
