"""Two-factor enrollments, single sign-on configurations and identities (``SqlStorage`` mixin).

Kept apart from ``_base`` because these tables hold the server's most sensitive columns
(``agent_two_factor.totp_secret``, ``workspace_sso.client_secret``): every read and write of
them goes through this module, which seals them with the workspace's data key
(``storage.crypto``; plaintext only when the storage has no master key ring).

The one-time rules are enforced in the database, not in the caller: a TOTP step is accepted only
if it is newer than the last accepted one, and a recovery code is removed by a compare-and-set on
the list that held it, so two concurrent logins cannot both spend the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from storage import api
from storage._records import codec, columns, decode, dump_json, new_id
from storage._sql import Program, Q
from storage.crypto import DataKey
from storage.errors import NotFound

T = TypeVar("T")


def _rows(sql: str, *args: Any) -> Program[list[dict[str, Any]]]:
    result = yield Q(sql, args)
    return result.rows


def _count(sql: str, *args: Any) -> Program[int]:
    result = yield Q(sql, args)
    return result.rowcount


class AuthStore:
    """Storage methods of ``storage.api.Storage`` for two-factor login and SSO."""

    _clock: Callable[[], float]

    async def _write(self, program: Program[T]) -> T:
        raise NotImplementedError

    async def _read(self, program: Program[T]) -> T:
        raise NotImplementedError

    async def data_key(self, workspace_id: str) -> DataKey | None:
        raise NotImplementedError

    async def _opened(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """The row with its sealed secret opened (``storage.crypto.SEALED_COLUMNS``)."""
        key = await self.data_key(str(row["workspace_id"]))
        return row if key is None else key.open_row(table, row)

    async def _sealed_args(self, table: str, record: Any) -> list[Any]:
        record_codec = codec(type(record))
        args = record_codec.to_args(record)
        key = await self.data_key(record.workspace_id)
        if key is None:
            return list(args)
        plain = dict(zip(record_codec.columns, args, strict=True))
        return list(key.seal_row(table, plain).values())

    # ------------------------------------------------------------ two-factor

    async def get_two_factor(self, workspace_id: str, agent_id: str) -> api.TwoFactor | None:
        sql = (
            f"SELECT {columns(api.TwoFactor)} FROM agent_two_factor"
            " WHERE workspace_id=? AND agent_id=?"
        )
        rows = await self._read(_rows(sql, workspace_id, agent_id))
        if not rows:
            return None
        return decode(api.TwoFactor, await self._opened("agent_two_factor", rows[0]))

    async def list_two_factor(self, workspace_id: str) -> list[api.TwoFactor]:
        sql = f"SELECT {columns(api.TwoFactor)} FROM agent_two_factor WHERE workspace_id=?"
        rows = await self._read(_rows(sql, workspace_id))
        return [decode(api.TwoFactor, await self._opened("agent_two_factor", r)) for r in rows]

    async def put_two_factor(self, record: api.TwoFactor) -> api.TwoFactor:
        """Start (or restart) an enrollment: replaces an unconfirmed one; the agent must exist."""
        record_codec = codec(api.TwoFactor)
        args = await self._sealed_args("agent_two_factor", record)

        def program() -> Program[api.TwoFactor]:
            found = yield Q(
                "SELECT 1 AS ok FROM agents WHERE id=? AND workspace_id=?",
                (record.agent_id, record.workspace_id),
            )
            if found.one() is None:
                raise NotFound(f"agent {record.agent_id!r} not found")
            yield Q("DELETE FROM agent_two_factor WHERE agent_id=?", (record.agent_id,))
            yield Q(record_codec.insert_sql(), args)
            return record

        return await self._write(program())

    async def confirm_two_factor(
        self, workspace_id: str, agent_id: str, *, step: int, recovery_hashes: Sequence[str]
    ) -> api.TwoFactor:
        sql = (
            "UPDATE agent_two_factor SET confirmed_at=?, last_step=?, recovery_hashes=?"
            " WHERE workspace_id=? AND agent_id=?"
            f" RETURNING {columns(api.TwoFactor)}"
        )
        args = (self._clock(), int(step), dump_json(list(recovery_hashes)), workspace_id, agent_id)
        rows = await self._write(_rows(sql, *args))
        if not rows:
            raise NotFound(f"two-factor enrollment of {agent_id!r} not found")
        return decode(api.TwoFactor, await self._opened("agent_two_factor", rows[0]))

    async def use_totp_step(self, workspace_id: str, agent_id: str, step: int) -> bool:
        """Record ``step`` as used; False if it (or a newer one) was already accepted."""
        sql = (
            "UPDATE agent_two_factor SET last_step=? WHERE workspace_id=? AND agent_id=?"
            " AND last_step<? AND confirmed_at IS NOT NULL"
        )
        return await self._write(_count(sql, int(step), workspace_id, agent_id, int(step))) == 1

    async def use_recovery_code(self, workspace_id: str, agent_id: str, code_hash: str) -> bool:
        """Spend one recovery code; False if it is not (or no longer) one of the agent's."""

        def program() -> Program[bool]:
            found = yield Q(
                "SELECT recovery_hashes FROM agent_two_factor"
                " WHERE workspace_id=? AND agent_id=? AND confirmed_at IS NOT NULL",
                (workspace_id, agent_id),
            )
            row = found.one()
            if row is None:
                return False
            old = str(row["recovery_hashes"])
            hashes = list(decode_hashes(old))
            if code_hash not in hashes:
                return False
            hashes.remove(code_hash)
            done = yield Q(
                "UPDATE agent_two_factor SET recovery_hashes=?"
                " WHERE workspace_id=? AND agent_id=? AND recovery_hashes=?",
                (dump_json(hashes), workspace_id, agent_id, old),
            )
            return done.rowcount == 1

        return await self._write(program())

    async def set_recovery_codes(
        self, workspace_id: str, agent_id: str, recovery_hashes: Sequence[str]
    ) -> None:
        sql = (
            "UPDATE agent_two_factor SET recovery_hashes=? WHERE workspace_id=? AND agent_id=?"
            " AND confirmed_at IS NOT NULL"
        )
        args = (dump_json(list(recovery_hashes)), workspace_id, agent_id)
        if await self._write(_count(sql, *args)) == 0:
            raise NotFound(f"two-factor enrollment of {agent_id!r} not found")

    async def delete_two_factor(self, workspace_id: str, agent_id: str) -> bool:
        """Remove the agent's enrollment; True if there was one."""
        sql = "DELETE FROM agent_two_factor WHERE workspace_id=? AND agent_id=?"
        return await self._write(_count(sql, workspace_id, agent_id)) > 0

    # ------------------------------------------------------------ single sign-on

    async def get_sso_config(self, workspace_id: str) -> api.SsoConfig | None:
        sql = f"SELECT {columns(api.SsoConfig)} FROM workspace_sso WHERE workspace_id=?"
        rows = await self._read(_rows(sql, workspace_id))
        return decode(api.SsoConfig, await self._opened("workspace_sso", rows[0])) if rows else None

    async def find_sso_config(self, slug: str) -> api.SsoConfig | None:
        sql = f"SELECT {columns(api.SsoConfig)} FROM workspace_sso WHERE slug=?"
        rows = await self._read(_rows(sql, slug.lower()))
        return decode(api.SsoConfig, await self._opened("workspace_sso", rows[0])) if rows else None

    async def put_sso_config(self, config: api.SsoConfig) -> api.SsoConfig:
        """Create or replace the workspace's configuration; a slug taken elsewhere: Conflict."""
        record_codec = codec(api.SsoConfig)
        args = await self._sealed_args("workspace_sso", config)

        def program() -> Program[api.SsoConfig]:
            yield Q("DELETE FROM workspace_sso WHERE workspace_id=?", (config.workspace_id,))
            yield Q(record_codec.insert_sql(), args)
            return config

        return await self._write(program())

    async def delete_sso_config(self, workspace_id: str) -> None:
        sql = "DELETE FROM workspace_sso WHERE workspace_id=?"
        await self._write(_count(sql, workspace_id))

    async def find_sso_identity(
        self, workspace_id: str, issuer: str, subject: str
    ) -> api.SsoIdentity | None:
        sql = (
            f"SELECT {columns(api.SsoIdentity)} FROM sso_identities"
            " WHERE workspace_id=? AND issuer=? AND subject=?"
        )
        rows = await self._read(_rows(sql, workspace_id, issuer, subject))
        return decode(api.SsoIdentity, rows[0]) if rows else None

    async def create_sso_identity(
        self, workspace_id: str, *, issuer: str, subject: str, agent_id: str
    ) -> api.SsoIdentity:
        """Link a provider subject to an agent; an existing link: ``Conflict``."""
        identity = api.SsoIdentity(
            id=new_id(),
            workspace_id=workspace_id,
            issuer=issuer,
            subject=subject,
            agent_id=agent_id,
            created_at=self._clock(),
        )
        record_codec = codec(api.SsoIdentity)
        await self._write(_count(record_codec.insert_sql(), *record_codec.to_args(identity)))
        return identity


def decode_hashes(text: str) -> tuple[str, ...]:
    value = json.loads(text)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
