"""Password hashing with argon2id (OWASP parameters), off the event loop, bounded.

Hashing costs ~19 MiB and tens of milliseconds; it runs in worker threads limited by a
``CapacityLimiter`` so a login storm cannot exhaust memory or threads. At most ``queue``
callers wait for a thread; more are refused at once with ``Overloaded`` (503 and
``Retry-After``) instead of queueing for seconds: a login flood then costs each refused request
almost nothing, and the event loop stays free for everything else. A cancelled caller waits for
its (short) hash to finish: argon2 cannot be interrupted, and threads are never abandoned.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar

import argon2
import trio

from web.errors import Overloaded

T = TypeVar("T")

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


RETRY_AFTER_S = 1.0  # advised to a refused caller: the queue drains in well under that


class PasswordHasher:
    """Hash and verify passwords in at most ``threads`` worker threads, with at most ``queue``
    callers waiting (``None``: no bound, for the command-line tools)."""

    def __init__(self, threads: int, *, queue: int | None = None) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=TIME_COST,
            memory_cost=MEMORY_COST_KIB,
            parallelism=PARALLELISM,
            type=argon2.Type.ID,
        )
        self._limiter = trio.CapacityLimiter(max(1, threads))
        self._queue = queue
        # Verified against when the account does not exist, so timing does not reveal it.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def admit(self) -> None:
        """Raise ``Overloaded`` if a hash requested now would have to wait in a full queue.

        Callers may call it before other work (a database lookup) to shed load earlier.
        """
        limiter = self._limiter
        if (
            self._queue is not None
            and limiter.available_tokens == 0
            and limiter.statistics().tasks_waiting >= self._queue
        ):
            raise Overloaded(
                "too many password checks at once; retry shortly", retry_after_s=RETRY_AFTER_S
            )

    async def _run(self, fn: Callable[[], T]) -> T:
        self.admit()
        return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=False)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; a missing hash costs the same time and fails."""
        target = password_hash or self._dummy_hash

        def check() -> bool:
            try:
                return bool(self._hasher.verify(target, password))
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        ok = await self._run(check)
        return ok and password_hash is not None


def generate_password() -> str:
    """A random password for first-start accounts and resets (printed once, never stored)."""
    return secrets.token_urlsafe(15)
