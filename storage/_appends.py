"""Durable group commit: many callers' appends share one transaction, released after it commits.

``GroupCommitter`` is a service owned by the storage's nursery. Callers ``submit`` a list of
requests (one ``append`` or one ``append_many``) and wait; the committer takes what is queued
(at most ``max_batch`` requests, lingering at most ``max_delay_s`` for more) and runs ONE
transaction (``append_batch_program``) that assigns each event ``conversations.last_seq + 1``,
resolves ``client_msg_id`` retries to the original event, and applies each request's patch. A
request for a conversation that is not in its workspace fails alone with ``NotFound``.

One bad submission never fails its batch-mates: when a batch's commit fails for a reason other
than an outage (``StorageUnavailable``), the committer bisects it, committing each half on its
own, in order, until the submission the database refuses is alone; only that one gets
``AppendRefused`` (a ``CommitFailed``). Halves commit in submission order, so sequence numbers
keep the queue's order and a ``client_msg_id`` retried in a later half resolves to the event an
earlier half stored.
Nothing is acknowledged before its own commit returned. On an outage every caller of the batch
gets ``CommitFailed`` at once (retrying alone would only multiply the wait).

Outages answer fast. While a commit attempt has been running for ``stalled_after_s`` (a lock
held by another process, a database that stopped answering), and after an attempt failed with
``StorageUnavailable`` (until a commit succeeds again), new submissions are refused at once with
``StorageUnavailable`` instead of queueing behind the stuck attempt; submissions queued when an
attempt fails that way fail with it. ``retry_outage_after_s`` after a failure, the next
submission is let through as the probe that finds out whether the database is back. A caller
cancelled before its submission's transaction began (still queued, or its batch waiting for the
database's lock or connection) withdraws it: the transaction leaves it out, so an error
answered to a sender is not followed by a late commit of its message.

Client-facing error messages are fixed sentences. The database's text for an outage goes to the
log; for a refusal only the error classes do (drivers quote the refused data, which may be other
callers' messages, and the logs carry no message bodies).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from storage import api
from storage._leases import fence_epochs, lease_lost
from storage._records import codec, decode, dump_json
from storage._sql import Dialect, Program, Q, Row, RowsInsert, RowsUpdate
from storage.crypto import SEARCHABLE_KINDS, DataKey, plain_terms
from storage.errors import (
    AppendRefused,
    CommitFailed,
    NotFound,
    StorageError,
    StorageUnavailable,
)

GROUP_COMMIT_MAX_BATCH: Final = 256  # requests per transaction
GROUP_COMMIT_MAX_DELAY_S: Final = 0.002  # how long the first request waits for company
GROUP_COMMIT_QUEUE_SIZE: Final = 4096  # submissions waiting for the committer (backpressure)
GROUP_COMMIT_STALLED_AFTER_S: Final = 2.0  # an attempt running this long refuses newcomers
GROUP_COMMIT_RETRY_OUTAGE_AFTER_S: Final = 1.0  # after an outage failure, refuse this long
COMMIT_FAILED_MESSAGE: Final = (
    "the database is unavailable; nothing was stored (retry with the same client_msg_id)"
)
REFUSED_MESSAGE: Final = "the database refused this append's data; nothing of it was stored"

log = logging.getLogger(__name__)

Outcome = list[api.AppendResult] | StorageError
Admit = Callable[[], list[bool]]  # called inside the transaction: which submissions to keep
BatchCommit = Callable[[list[Sequence[api.AppendRequest]], Admit], Awaitable[list[Outcome]]]

_EVENT_CODEC = codec(api.Event)
_EVENT_SELECT = ",".join(f"e.{c}" for c in _EVENT_CODEC.columns)
# Inserted besides the record's columns: the blind index of the body (storage.crypto).
_INSERT_COLUMNS: Final = (*_EVENT_CODEC.typed_columns, ("search_terms", "text"))
_CONVERSATION_SELECT = ",".join(codec(api.Conversation).columns)
_MUTABLE_CONVERSATION_COLUMNS: Final = tuple(
    (name, sql_type)
    for name, sql_type in codec(api.Conversation).typed_columns
    if name not in ("id", "workspace_id", "visitor_id", "created_at")
)
_MUTABLE_COLUMN_NAMES: Final = tuple(name for name, _ in _MUTABLE_CONVERSATION_COLUMNS)
_KEY_COLUMNS: Final = (("cid", "text"), ("mid", "text"))


@attrs.frozen(kw_only=True)
class GroupCommitConfig:
    """Bounds of one group commit; ``max_batch=1, max_delay_s=0`` is one transaction per call."""

    max_batch: int = GROUP_COMMIT_MAX_BATCH
    max_delay_s: float = GROUP_COMMIT_MAX_DELAY_S
    queue_size: int = GROUP_COMMIT_QUEUE_SIZE
    stalled_after_s: float = GROUP_COMMIT_STALLED_AFTER_S
    retry_outage_after_s: float = GROUP_COMMIT_RETRY_OUTAGE_AFTER_S


@attrs.define(eq=False)
class _Pending:
    requests: Sequence[api.AppendRequest]
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: Outcome | None = None
    started: bool = False  # its transaction began: too late for the caller to withdraw it
    withdrawn: bool = False  # the caller gave up before that: never commit it

    def claim(self) -> bool:
        """Inside the transaction (possibly a worker thread): keep it unless withdrawn.

        A caller cancelled at this very moment may see ``started`` still False and believe it
        withdrew: the benign side of the race (it may be committed, as ``submit`` says).
        """
        if self.withdrawn:
            return False
        self.started = True
        return True


class GroupCommitter:
    """The queue in front of the single writer; see the module docstring."""

    def __init__(self, commit: BatchCommit, config: GroupCommitConfig) -> None:
        self._commit = commit
        self._config = config
        self._send, self._receive = trio.open_memory_channel[_Pending](config.queue_size)
        self._last_batch_size = 0
        # Real time (``time.monotonic``): it measures database work, which a test's virtual clock
        # does not slow down.
        self._attempt_started: float | None = None  # None while idle
        self._outage_at: float | None = None  # last outage failure; None once a commit succeeds
        self._outage_in_attempt = False  # the current attempt (or its isolation) hit an outage

    def unavailable_reason(self) -> str | None:
        """Why a new submission would be refused right now (see the module docstring)."""
        now = time.monotonic()
        started = self._attempt_started
        if started is not None and now - started >= self._config.stalled_after_s:
            return f"the database has not completed a commit for {now - started:.1f} s"
        if self._outage_at is not None and (
            started is not None or now - self._outage_at < self._config.retry_outage_after_s
        ):
            return "the database is unavailable"
        return None

    async def submit(self, requests: Sequence[api.AppendRequest]) -> list[api.AppendResult]:
        """Queue the requests and wait for their commit.

        Raises ``StorageUnavailable`` at once while the committer is stuck or just failed by an
        outage. If the caller is cancelled while its requests are still queued, they are
        withdrawn (never committed); once their transaction began they may still be: a
        retry with the same ``client_msg_id`` then returns the stored event (``duplicate=True``).
        """
        if not requests:
            return []
        refused = self.unavailable_reason()
        if refused is not None:
            raise StorageUnavailable(refused)
        pending = _Pending(requests)
        try:
            try:  # room in the queue: no scheduling round of its own (the wait below is one)
                self._send.send_nowait(pending)
            except trio.WouldBlock:
                await self._send.send(pending)
            await pending.done.wait()
        except (trio.ClosedResourceError, trio.BrokenResourceError) as err:
            raise StorageUnavailable("storage is closed") from err
        except BaseException:
            if not pending.started:
                pending.withdrawn = True
            raise
        outcome = pending.outcome
        if isinstance(outcome, StorageError):
            raise outcome
        assert outcome is not None
        return outcome

    def close(self) -> None:
        """Stop accepting; ``run`` commits what is already queued, then returns."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The committer loop; returns once ``close`` was called and the queue is drained.

        On cancellation, callers still waiting get ``StorageUnavailable``.
        """
        task_status.started()
        batch: list[_Pending] = []
        try:
            async with self._receive:
                async for first in self._receive:
                    if first.withdrawn:
                        continue
                    batch = [first]
                    await self._collect(batch)
                    self._attempt_started = time.monotonic()
                    self._outage_in_attempt = False
                    try:
                        await self._commit_one(batch)
                    finally:
                        self._attempt_started = None
                    batch = []
        finally:
            for pending in batch:
                if not pending.done.is_set():
                    pending.outcome = StorageUnavailable("storage closed during the commit")
                    pending.done.set()
            while True:
                try:
                    pending = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                pending.outcome = StorageUnavailable("storage closed before the commit")
                pending.done.set()

    async def _collect(self, batch: list[_Pending]) -> None:
        """Add queued submissions to ``batch``, up to ``max_batch`` requests.

        Lingering for company (up to ``max_delay_s``) only pays under concurrency: when the
        previous batch had a single submission, an idle writer commits at once instead of
        adding the delay to a lone caller's latency.
        """
        count = len(batch[0].requests)
        linger_s = self._config.max_delay_s if self._last_batch_size > 1 else 0.0
        deadline = trio.current_time() + linger_s
        while count < self._config.max_batch:
            try:
                pending: _Pending | None = self._receive.receive_nowait()
            except trio.EndOfChannel:
                break
            except trio.WouldBlock:
                if trio.current_time() >= deadline:
                    break
                pending = None
                with trio.move_on_at(deadline):
                    with contextlib.suppress(trio.EndOfChannel):
                        pending = await self._receive.receive()
            if pending is None:
                break
            if pending.withdrawn:
                continue
            batch.append(pending)
            count += len(pending.requests)
        self._last_batch_size = len(batch)

    async def _commit_one(self, batch: list[_Pending]) -> None:
        """Commit ``batch``; on a failure that is not an outage, bisect it (module docstring)."""
        if self._outage_in_attempt:
            # An outage began while this batch was being isolated: do not wait for it again.
            self._fail(batch, StorageUnavailable("the database is unavailable"))
            return
        try:
            outcomes = await self._commit(
                [p.requests for p in batch], lambda: [p.claim() for p in batch]
            )
        except Exception as err:  # supervision boundary: a bad batch must not stop the writer
            if isinstance(err, StorageUnavailable):
                self._outage_at = time.monotonic()
                self._outage_in_attempt = True
                self._fail_queued(err)
            if len(batch) > 1 and not isinstance(err, StorageUnavailable):
                log.warning(
                    "group commit of %d submissions failed (%s); isolating the bad one",
                    len(batch),
                    _kinds(err),
                )
                middle = len(batch) // 2
                await self._commit_one(batch[:middle])
                await self._commit_one(batch[middle:])
                return
            if isinstance(err, StorageUnavailable):  # the outage's text names no data
                log.error("group commit of %d submissions failed: %s", len(batch), err)
            else:
                log.error("the database refused one submission (%s)", _kinds(err))
            self._fail(batch, err, refused=not isinstance(err, StorageUnavailable))
            return
        self._outage_at = None
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.outcome = outcome
            pending.done.set()

    def _fail(self, batch: list[_Pending], err: Exception, *, refused: bool = False) -> None:
        for pending in batch:
            failed = (
                AppendRefused(REFUSED_MESSAGE) if refused else CommitFailed(COMMIT_FAILED_MESSAGE)
            )
            failed.__cause__ = err
            pending.outcome = failed
            pending.done.set()

    def _fail_queued(self, err: Exception) -> None:
        """On an outage, what waits in the queue fails now rather than after another attempt."""
        queued: list[_Pending] = []
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if not pending.withdrawn:
                queued.append(pending)
        self._fail(queued, err)


_WITHDRAWN: Final = "withdrawn by its caller before the commit"


def _kinds(err: BaseException) -> str:
    """Class names of a refusal and its cause: the drivers' texts can quote the batch's data
    (asyncpg's ``DataError`` holds a whole column of message bodies), and logs carry none."""
    kinds = [type(err).__name__]
    if err.__cause__ is not None:
        kinds.append(type(err.__cause__).__name__)
    return " from ".join(kinds)


def append_batch_program(
    batch: Sequence[Sequence[api.AppendRequest]],
    *,
    now: float,
    dialect: Dialect,
    admit: Admit | None = None,
    data_keys: Mapping[str, DataKey | None] | None = None,
) -> Program[list[Outcome]]:
    """One transaction for a whole batch; outcomes in the batch's order.

    A constant number of statements per batch, whatever its size: one SELECT locking the
    conversations (their ``last_seq`` is the base of the new seqs), one SELECT finding earlier
    events with the batch's ``client_msg_id`` keys (an exact-pair join on the unique index), one
    INSERT of every new event, one UPDATE of the touched conversations (on PostgreSQL these two
    are one statement: ``Dialect.insert_then_update``).

    ``admit``, called first (inside the transaction), drops submissions whose callers gave up;
    they get ``StorageUnavailable`` outcomes nobody reads.

    ``data_keys``: by conversation (with its visitor's key, ``storage._vault``); bodies are
    sealed with them and indexed by keyed tokens
    (the events returned carry the plaintext). Without one, bodies are stored as they are.
    """
    if admit is not None:
        kept = admit()
        live = [requests for requests, keep in zip(batch, kept, strict=True) if keep]
        if len(live) < len(batch):
            program = append_batch_program(live, now=now, dialect=dialect, data_keys=data_keys)
            live_outcomes = iter((yield from program))
            return [
                next(live_outcomes) if keep else StorageUnavailable(_WITHDRAWN) for keep in kept
            ]
    if not batch:
        return []
    conversation_ids = sorted({r.conversation_id for reqs in batch for r in reqs})
    where, args = dialect.in_list("id", conversation_ids)
    # Sorted ids: PostgreSQL row locks are always taken in the same order (no deadlocks).
    result = yield Q(
        f"SELECT {_CONVERSATION_SELECT} FROM conversations WHERE {where} ORDER BY id"
        f"{dialect.lock_rows()}",
        args,
    )
    conversations: dict[str, Row] = {row["id"]: row for row in result.rows}
    # Cluster fencing (storage/_leases.py): a stale owner's submission is refused whole.
    epochs = yield from fence_epochs(batch, dialect)

    keys = sorted(
        {
            (r.conversation_id, r.client_msg_id)
            for reqs in batch
            for r in reqs
            if r.client_msg_id is not None
        }
    )
    originals: dict[tuple[str, str | None], Row] = {}
    for relation, key_args in dialect.rows_relation("k", _KEY_COLUMNS, keys):
        result = yield Q(
            f"SELECT {_EVENT_SELECT} FROM {relation} JOIN events e"
            " ON e.conversation_id = k.cid AND e.client_msg_id = k.mid",
            key_args,
        )
        for found in result.rows:
            originals[(found["conversation_id"], found["client_msg_id"])] = found

    batch_events: dict[tuple[str, str | None], api.Event] = {}  # appended by this batch
    inserts: list[list[Any]] = []
    dirty: set[str] = set()
    outcomes: list[Outcome] = []
    for requests in batch:
        if epochs and (lost := lease_lost(requests, epochs)) is not None:
            outcomes.append(lost)
            continue
        missing = [
            r.conversation_id
            for r in requests
            if (row := conversations.get(r.conversation_id)) is None
            or row["workspace_id"] != r.workspace_id
        ]
        if missing:
            outcomes.append(NotFound(f"conversation {missing[0]!r} not found"))
            continue
        results: list[api.AppendResult] = []
        for request in requests:
            key = (request.conversation_id, request.client_msg_id)
            if request.client_msg_id is not None:
                stored = batch_events.get(key)
                original = originals.get(key) if stored is None else None
                if original is not None:
                    data_key = data_keys.get(request.conversation_id) if data_keys else None
                    if data_key is not None:
                        original = data_key.open_row("events", original)
                    stored = decode(api.Event, original)
                if stored is not None:
                    results.append(api.AppendResult(event=stored, duplicate=True))
                    continue
            conversation = conversations[request.conversation_id]
            seq = conversation["last_seq"] = conversation["last_seq"] + 1
            conversation["last_activity_at"] = now
            if request.patch is not None:
                apply_patch(conversation, request.patch)
                if request.patch.rating_comment is not None and data_keys:
                    seal_rating_comment(conversation, data_keys.get(request.conversation_id))
            dirty.add(request.conversation_id)
            event = api.Event(
                workspace_id=request.workspace_id,
                conversation_id=request.conversation_id,
                seq=seq,
                kind=request.kind,
                visibility=request.visibility,
                author_type=request.author_type,
                author_id=request.author_id,
                body=request.body,
                data=request.data,
                client_msg_id=request.client_msg_id,
                created_at=now,
            )
            data_key = data_keys.get(request.conversation_id) if data_keys else None
            event_args = _event_args(event, data_key)
            inserts.append(event_args)
            if request.client_msg_id is not None:
                batch_events[key] = event  # a retry inside the same batch resolves to it
            results.append(api.AppendResult(event=event, duplicate=False))
        outcomes.append(results)

    updates = [
        [conversations[cid][c] for c in _MUTABLE_COLUMN_NAMES] + [cid] for cid in sorted(dirty)
    ]
    writes = dialect.insert_then_update(
        RowsInsert("events", _INSERT_COLUMNS, inserts),
        RowsUpdate("conversations", "id", _MUTABLE_CONVERSATION_COLUMNS, updates),
    )
    for q in writes:  # noqa: UP028 (``yield from`` a list cannot take the results sent back)
        yield q
    return outcomes


_EMPTY_JSON: Final = "{}"


def _event_args(event: api.Event, key: DataKey | None = None) -> list[Any]:
    """``codec(api.Event).to_args`` for the hot path (no per-field dispatch; ``{}`` not dumped),
    the body and the personal fields of ``data`` sealed with ``key``, then ``search_terms``."""
    body, terms, data, kind = event.body, None, event.data, _text(event.kind)
    if key is not None and data:
        data = key.seal_data(kind, data)  # an offline message's name and email
    if body is not None:
        if kind in SEARCHABLE_KINDS:
            terms = key.terms(body) if key is not None else plain_terms(body)
        if key is not None:
            body = key.seal(body, "events.body")
    return [
        event.workspace_id,
        event.conversation_id,
        event.seq,
        kind,
        _text(event.visibility),
        _text(event.author_type),
        event.author_id,
        body,
        dump_json(dict(data)) if data else _EMPTY_JSON,
        event.client_msg_id,
        float(event.created_at),
        terms,
    ]


def _text(value: Any) -> str:
    # ``_value_``, not ``value``: the property costs two Python calls per access.
    return value._value_ if isinstance(value, enum.Enum) else str(value)


def seal_rating_comment(row: Row, key: DataKey | None) -> None:
    """The patched rating comment sealed with the conversation's (visitor's) key."""
    if key is not None and row["rating_comment"] is not None:
        row["rating_comment"] = key.seal(row["rating_comment"], "conversations.rating_comment")


def apply_patch(row: Row, patch: api.ConversationPatch) -> None:
    """Apply a patch to a raw conversation row (JSON columns as text), in place."""
    if patch.state is not None:
        row["state"] = patch.state.value
    if patch.clear_close_reason:
        row["close_reason"] = None
    if patch.close_reason is not None:
        row["close_reason"] = patch.close_reason.value
    if patch.group_id is not None:
        row["group_id"] = patch.group_id
    if patch.clear_assignee:
        row["assignee_id"] = None
    if patch.assignee_id is not None:
        row["assignee_id"] = patch.assignee_id
    if patch.previous_assignee_id is not None:
        row["previous_assignee_id"] = patch.previous_assignee_id
    if patch.participant_ids is not None:
        row["participant_ids"] = dump_json(list(patch.participant_ids))
    if patch.tags is not None:
        row["tags"] = dump_json(list(patch.tags))
    if patch.rating is not None:
        row["rating"] = patch.rating
    if patch.rating_comment is not None:
        row["rating_comment"] = patch.rating_comment
    if patch.first_response_at is not None and row["first_response_at"] is None:
        row["first_response_at"] = float(patch.first_response_at)
    if patch.clear_closed_at:
        row["closed_at"] = None
    if patch.closed_at is not None:
        row["closed_at"] = float(patch.closed_at)
