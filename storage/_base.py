"""``SqlStorage``: the whole ``Storage`` interface written once, over an abstract SQL driver.

A backend (``storage.sqlite``, ``storage.postgres``) supplies the driver (``storage._driver``);
the interface is put together here from one mixin per part (``_vault`` first, ``_directory``,
``_visitors``, ``_conversations``, ``_operations``, ``_auth``, ``_mail``, ``_webhooks``,
``_triggers``, ``_leases``, ``_attachments``), and appends go through the group committer
(``storage._appends``). Everything lives above the driver, so the two backends cannot drift
apart.

Tenancy: every statement on a tenant table has ``workspace_id = ?`` in its WHERE clause (or checks
the parent row's workspace first), so a foreign id behaves exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from storage import api
from storage._appends import Admit, GroupCommitConfig, GroupCommitter, append_batch_program
from storage._attachments import AttachmentStore
from storage._auth import AuthStore
from storage._conversations import ConversationStore
from storage._directory import DirectoryStore
from storage._driver import Clock, TxSession, execute, fetch
from storage._leases import LeaseStore
from storage._mail import MailStorage
from storage._operations import OperationsStore
from storage._sql import Dialect
from storage._triggers import TriggerStore
from storage._vault import VaultStore
from storage._visitors import VisitorStore
from storage._webhooks import WebhookStore
from storage.errors import StorageError, StorageUnavailable

# Re-exported: the backends and the storage bench reach these through this module.
__all__ = [
    "Clock",
    "SqlStorage",
    "TxSession",
    "execute",
    "fetch",
    "raise_single",
    "serving_committer",
]


@asynccontextmanager
async def serving_committer(storage: SqlStorage) -> AsyncIterator[None]:
    """Run the storage's group committer for the duration of the block.

    On exit the committer stops accepting, commits what is queued, and returns. An error raised
    by the block comes out as itself, not wrapped in an exception group: the committer never
    raises (a failed batch fails its callers instead), so the block's error is the only one.
    """
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.committer.run)
            try:
                yield
            finally:
                storage.committer.close()
    except BaseExceptionGroup as group:
        raise_single(group)


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise a group holding (possibly nested) exactly one exception as that exception.

    Used where the storage's own tasks cannot fail, so a lone error is the caller's own.
    """
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if error is group:
        raise group
    raise error from None


class SqlStorage(
    VaultStore,  # first: its overrides of the driver's key handling win (storage._vault)
    ConversationStore,
    VisitorStore,
    DirectoryStore,
    OperationsStore,
    AuthStore,
    MailStorage,
    WebhookStore,
    TriggerStore,
    LeaseStore,
    AttachmentStore,
):
    """Implements ``storage.api.Storage``; see the module docstring."""

    def __init__(self, dialect: Dialect, *, clock: Clock, group_commit: GroupCommitConfig) -> None:
        super().__init__(dialect, clock=clock)
        self._committer = GroupCommitter(self._commit_batch, group_commit)

    async def check_ready(self) -> None:
        """Raise ``StorageUnavailable`` unless an append could commit now: the committer is
        neither stuck in an attempt nor just failed by an outage, and the backend's write
        probe answers. What ``/readyz`` asks."""
        reason = self._committer.unavailable_reason()
        if reason is not None:
            raise StorageUnavailable(reason)
        await self._probe_write()

    @property
    def committer(self) -> GroupCommitter:
        """The group committer; its ``run`` is started by the backend's opener."""
        return self._committer

    async def _commit_batch(
        self, batch: list[Sequence[api.AppendRequest]], admit: Admit
    ) -> list[list[api.AppendResult] | StorageError]:
        # By conversation, sealing with its visitor's key; cached: no database round trip.
        keys = await self._batch_sealers(batch)
        program = append_batch_program(
            batch, now=self._clock(), dialect=self._dialect, admit=admit, data_keys=keys
        )
        return await self._write_appends(program)

    async def append(self, request: api.AppendRequest) -> api.AppendResult:
        """See ``storage.api.Storage.append``; queued to the group committer."""
        (result,) = await self._committer.submit([request])
        return result

    async def append_many(self, requests: Sequence[api.AppendRequest]) -> list[api.AppendResult]:
        """All in one commit, in order; if one conversation is missing, none is appended."""
        return await self._committer.submit(list(requests))
