"""Password hashing with argon2id (OWASP parameters), off the event loop, bounded.

Hashing costs ~19 MiB and tens of milliseconds; it runs in worker threads limited by a
``CapacityLimiter`` so a login storm cannot exhaust memory or threads. A cancelled caller waits
for its (short) hash to finish: argon2 cannot be interrupted, and threads are never abandoned.
"""

from __future__ import annotations

import secrets

import argon2
import trio

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


class PasswordHasher:
    """Hash and verify passwords in at most ``threads`` concurrent worker threads."""

    def __init__(self, threads: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=TIME_COST,
            memory_cost=MEMORY_COST_KIB,
            parallelism=PARALLELISM,
            type=argon2.Type.ID,
        )
        self._limiter = trio.CapacityLimiter(max(1, threads))
        # Verified against when the account does not exist, so timing does not reveal it.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(
            self._hasher.hash, password, limiter=self._limiter, abandon_on_cancel=False
        )

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; a missing hash costs the same time and fails."""
        target = password_hash or self._dummy_hash

        def check() -> bool:
            try:
                return bool(self._hasher.verify(target, password))
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        ok = await trio.to_thread.run_sync(check, limiter=self._limiter, abandon_on_cancel=False)
        return ok and password_hash is not None


def generate_password() -> str:
    """A random password for first-start accounts and resets (printed once, never stored)."""
    return secrets.token_urlsafe(15)
