"""The push side of one WebSocket: the engine's outbox to the socket, in order, with the
heartbeat pings in between, and (protocol 2) the hand-over of one's own message event to the
result of the request that caused it.

The engine delivers with ``send_nowait`` into the outbox; ``Pump.run`` drains it: one
``await receive()``, then whatever else is queued, each push encoded once for every connection
it is fanned out to (``encode_push``). The pings need no task or timer of their own: the shared
socket timer (``SocketSession.deadline_check``) queues ``PING`` into the outbox when one is due,
and the pump sends it in its turn. So an idle pump is one task parked on its outbox, with no
deadline to arm and cancel on every wait; ``Pump.parked`` tells the timer that the outbox is
empty (a memory channel hands an item straight to a waiting receiver), and ``on_wake`` that it is
not any more. A ping is a frame only:
credentials reach sockets by push (``web/sockets.py``).

Protocol 2 (docs/protocol.md, "Versions"): while a message request is in flight its
``HeldEcho`` waits in ``Pump.held``. The pump hands the request's own event to it instead of
sending it, then waits until the result (carrying the event) is sent, so events keep their
order on the socket. If the result goes without it (the event came late, the request failed),
the pump sends the event itself, as in protocol 1: the echo with the request's ``id``.

Protocol 3: the pushes drained together go out as one WebSocket message, a JSON array of
frames in order (up to ``BATCH_MAX_CHARS``), so a busy socket (an agent with many chats) pays
one write for a burst instead of one per frame. A single push is still sent bare.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from engine import ConversationUpdate, EventPush, SessionClosed, unstructure
from web.protocol import CloseCode, PingFrame, encode, encode_dict, with_request_id
from web.sockets import CloseSocket, GoingAway

ECHO_MEMORY = 256  # client_msg_id -> request id, for pushes caused by a request
# How long a message's result waits for the event it caused, to carry it (the engine fans out
# as it acknowledges: normally no wait at all); and the bound on how long the pump keeps that
# event back for the result (the request's own deadline comes first).
ECHO_WAIT_S = 0.25
ECHO_HOLD_S = 30.0
PING_TEXT = encode(PingFrame())
BATCH_MAX_CHARS = 64 * 1024  # protocol 3: a larger burst goes out in several arrays
PING = object()  # queued by the socket timer: send a heartbeat ping


@attrs.define(eq=False)
class HeldEcho:
    """The event of the message request in flight, handed from the pump to its result."""

    client_msg_id: str
    push: EventPush | None = None  # set by the pump, which then waits for ``done``
    ready: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)
    sent: bool = False  # the result carried it: the pump drops its copy


class Pump:
    """Engine pushes to one socket. ``send`` writes a frame; ``is_me`` says whether an event's
    author is this connection's principal; ``on_update`` sees conversation updates first."""

    __slots__ = (
        "_echo",
        "_is_me",
        "_on_update",
        "_on_wake",
        "_send",
        "batch",
        "held",
        "outbox",
        "parked",
    )

    def __init__(
        self,
        outbox: trio.MemoryReceiveChannel[Any],
        *,
        send: Callable[[str], Awaitable[None]],
        is_me: Callable[[str, str | None], bool],
        on_update: Callable[[ConversationUpdate], None],
        on_wake: Callable[[], None],
        batch: bool = False,
    ) -> None:
        self.outbox = outbox
        self.batch = batch  # protocol 3: a burst of pushes in one message
        self._send = send
        self._is_me = is_me
        self._on_update = on_update
        self._on_wake = on_wake  # it took pushes: the socket timer checks it again
        # Waiting on an empty outbox (no item taken and not yet sent): what the timer reads.
        self.parked = False
        self._echo: OrderedDict[str, str | int] | None = None  # created on the first message
        self.held: HeldEcho | None = None

    def remember(self, client_msg_id: str, request_id: str | int) -> None:
        """The echo of ``client_msg_id`` carries ``request_id`` (the last ``ECHO_MEMORY``)."""
        if self._echo is None:
            self._echo = OrderedDict()
        self._echo[client_msg_id] = request_id
        self._echo.move_to_end(client_msg_id)
        while len(self._echo) > ECHO_MEMORY:
            self._echo.popitem(last=False)

    def hold(self, client_msg_id: str) -> HeldEcho:
        """Protocol 2: keep the event of ``client_msg_id`` for its result (until ``release``)."""
        held = self.held = HeldEcho(client_msg_id=client_msg_id)
        return held

    async def take(self, held: HeldEcho) -> dict[str, Any] | None:
        """The held event as a JSON-ready dict for the result, waiting up to ``ECHO_WAIT_S``
        for it; None if it has not come (the pump then sends it itself when it does)."""
        if held.push is None:
            with trio.move_on_after(ECHO_WAIT_S):
                await held.ready.wait()
        self.held = None
        if held.push is None:
            return None
        held.sent = True
        event: dict[str, Any] = push_data(held.push)["event"]
        return event

    def release(self, held: HeldEcho) -> None:
        """The result was sent (or the request failed): the pump goes on."""
        if self.held is held:
            self.held = None
        held.done.set()

    async def run(self) -> None:
        """Until the outbox ends (the engine dropped this subscriber): then close 1013; or
        until ``GOING_AWAY`` comes out of it (the server serving the socket drains): 1001.

        Started after the hello/auth result (which carries the welcome) was sent, so replayed
        and live pushes always follow it.
        """
        outbox = self.outbox
        while True:
            self.parked = True
            try:
                push = await outbox.receive()
            except trio.EndOfChannel:
                break
            self.parked = False
            self._on_wake()
            batch = [push]
            while True:
                try:
                    batch.append(outbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self.batch and len(batch) > 1:
                await self._forward_batch(batch)
            else:
                for item in batch:
                    await self._forward(item)
        raise CloseSocket(CloseCode.TRY_AGAIN_LATER, "slow consumer, resume")

    async def _forward(self, push: Any) -> None:
        if push is PING:
            await self._send(PING_TEXT)
            return
        text = await self._render(push)
        if text is not None:
            await self._send(text)

    async def _forward_batch(self, pushes: list[Any]) -> None:
        """Protocol 3: ``pushes`` as arrays of frames, in order. What waits for a result (the
        held echo) or ends the socket first sends what came before it."""
        texts: list[str] = []
        size = 0
        for push in pushes:
            if texts and (
                size >= BATCH_MAX_CHARS
                or push is PING
                or isinstance(push, SessionClosed)
                or self._held_for(push) is not None
            ):
                await self._send_texts(texts)
                texts, size = [], 0
            if push is PING:  # a ping is never in an array
                await self._send(PING_TEXT)
                continue
            text = await self._render(push)
            if text is not None:
                texts.append(text)
                size += len(text)
        if texts:
            await self._send_texts(texts)

    async def _send_texts(self, texts: list[str]) -> None:
        await self._send(texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]")

    def _held_for(self, push: Any) -> HeldEcho | None:
        """The held echo ``push`` belongs to: this connection's own event of the message whose
        request is in flight, not yet handed over. ``_render`` then waits for the result, so a
        protocol 3 burst sends what came before it first (``_forward_batch``). Another
        author's event with the same ``client_msg_id`` is not held."""
        held = self.held
        if (
            held is None
            or held.push is not None
            or not isinstance(push, EventPush)
            or push.event.client_msg_id != held.client_msg_id
        ):
            return None
        event = push.event
        return held if self._is_me(event.author_type, event.author_id) else None

    async def _render(self, push: Any) -> str | None:
        """``push`` as the text of its frame; None when its request's result carried it."""
        if isinstance(push, SessionClosed):
            raise CloseSocket(CloseCode.POLICY, push.reason)
        if isinstance(push, GoingAway):
            raise CloseSocket(CloseCode.GOING_AWAY, "server shutdown")
        request_id: str | int | None = None
        if isinstance(push, EventPush):
            event = push.event
            held = self._held_for(push)
            if held is not None:
                # Its result carries it: wait until that is sent, to keep the order.
                held.push = push
                held.ready.set()
                with trio.move_on_after(ECHO_HOLD_S):
                    await held.done.wait()
                if held.sent:
                    return None
            mine = held is not None or (
                event.client_msg_id is not None and self._is_me(event.author_type, event.author_id)
            )
            if mine and self._echo and event.client_msg_id is not None:
                request_id = self._echo.get(event.client_msg_id)
        elif isinstance(push, ConversationUpdate):
            self._on_update(push)
        text = encode_push(push)
        if request_id is not None:
            # The echo to the sender carries its request id as the last key.
            text = with_request_id(text, request_id)
        return text


_ENCODED_PUSHES: dict[int, tuple[Any, dict[str, Any], str]] = {}
_ENCODED_PUSHES_MAX = 512


def _cached_push(push: Any) -> tuple[Any, dict[str, Any], str]:
    """A push unstructured and as JSON text, once for all the connections it is fanned out to.

    The engine hands the same (immutable) push object to every recipient. Entries hold the
    push itself, so its ``id`` cannot be reused while cached; the oldest go first.
    """
    key = id(push)
    cached = _ENCODED_PUSHES.get(key)
    if cached is not None and cached[0] is push:
        return cached
    return _store(push, unstructure(push))


def _store(push: Any, data: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    entry = _ENCODED_PUSHES[id(push)] = (push, data, encode_dict(data))
    if len(_ENCODED_PUSHES) > _ENCODED_PUSHES_MAX:
        del _ENCODED_PUSHES[next(iter(_ENCODED_PUSHES))]
    return entry


def forwarded_push(push: Any, data: dict[str, Any]) -> None:
    """``push`` was structured from ``data``, its unstructured form sent by the node that owns
    its workspace (web/cluster.py): kept as such, so the socket does not unstructure it back."""
    _store(push, data)


def encode_push(push: Any) -> str:
    """A push as JSON text (shared with the other recipients)."""
    return _cached_push(push)[2]


def push_data(push: Any) -> dict[str, Any]:
    """A push as a JSON-ready dict (shared with the other recipients: do not modify)."""
    return _cached_push(push)[1]
