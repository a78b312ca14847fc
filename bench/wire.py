"""What the load generator says on the wire: one adapter per server under test.

The load generator's clock, counters and loss accounting do not care which server they drive;
only the handshake and the frame shapes differ. ``RelayWire`` speaks to ``bench/relay.py`` (every
frame is relayed verbatim to the other side of the pair); ``LiveChatWire`` speaks the documented
protocol of ``livechat serve`` (``docs/protocol.md``).

A message's identity is its ``client_msg_id`` (``v<pair>.<n>`` visitor→agent, ``a<pair>.<n>``
agent→visitor): the receiver recognises it in the frame it is handed, which is how the load
generator counts lost and duplicated messages without trusting the server.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import attrs
import trio
from trio_websocket import WebSocketConnection, connect_websocket_url

# A frame for the server is small; the queue holds a few so that the reader never stalls a burst.
CLIENT_MESSAGE_QUEUE_SIZE = 64


class WireError(Exception):
    """The server answered a handshake with something the adapter does not understand."""


@attrs.frozen(kw_only=True)
class Delivery:
    """A conversation event as a receiver sees it; ``client_msg_id`` is "" for system events."""

    client_msg_id: str
    seq: int | None = None
    conversation_id: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """A frame the client must answer (a server heartbeat): send ``text`` back."""

    text: str


@attrs.frozen(kw_only=True)
class Rejected:
    """The server refused a request; ``request_id`` is the message's id when it was a send."""

    request_id: str | None
    code: str
    message: str = ""
    retry_after_s: float | None = None  # rate limits: resend the same message after this


@attrs.frozen(kw_only=True)
class Acked:
    """The server acknowledged a send: the message is durable (``request_id`` is its id)."""

    request_id: str


@attrs.frozen(kw_only=True)
class Resync:
    """The server could not replay a gap: fetch history after ``from_seq`` (docs/protocol.md)."""

    conversation_id: str
    from_seq: int


@attrs.frozen(kw_only=True)
class HistoryPage:
    """One page of history fetched after a ``Resync``; ``events`` in ascending seq."""

    conversation_id: str
    events: tuple[Delivery, ...]
    has_more: bool


Parsed = Delivery | Reply | Rejected | Acked | Resync | HistoryPage | None


@attrs.define(kw_only=True)
class PairLink:
    """One visitor-agent pair, both sockets open and able to exchange messages."""

    index: int
    visitor: WebSocketConnection
    agent: WebSocketConnection
    conversation_id: str | None = None
    visitor_token: str | None = None  # to come back as the same visitor (resume)


class Wire(Protocol):
    async def open_pair(self, nursery: trio.Nursery, index: int, spec: dict[str, Any]) -> PairLink:
        """Open both sockets of pair ``index`` and do whatever handshake makes them a pair."""
        ...

    async def open_idle(
        self, nursery: trio.Nursery, index: int, spec: dict[str, Any]
    ) -> WebSocketConnection:
        """Open one visitor socket, authenticated and subscribed, that will then stay idle."""
        ...

    def message_frame(self, role: str, link: PairLink, client_msg_id: str, body: str) -> str:
        """The frame that sends a chat message from ``role`` on ``link``."""
        ...

    def parse(self, role: str, text: str) -> list[Parsed]:
        """What a received message means to the load generator, one entry per frame it
        carries (None for frames it ignores)."""
        ...

    def heartbeat_frame(self) -> str | None:
        """An application-level heartbeat, or None to use WebSocket pings."""
        ...

    def history_frame(self, conversation_id: str, after_seq: int) -> str | None:
        """The request for a page of history after ``after_seq``; None without history."""
        ...

    async def reopen(
        self, nursery: trio.Nursery, role: str, links: list[PairLink], last_seq: dict[str, int]
    ) -> WebSocketConnection | None:
        """Reconnect ``role``'s socket of ``links`` after the server closed it, resuming each
        conversation after ``last_seq``; None when the protocol has no resume."""
        ...

    @property
    def max_frames_per_10s(self) -> int | None:
        """The server's per-connection frame budget the client must pace itself to, if any."""
        ...

    @property
    def acknowledges(self) -> bool:
        """The server acknowledges each send (then an unanswered send is sent again)."""
        ...


async def connect(
    nursery: trio.Nursery, url: str, headers: list[tuple[str, str]] | None = None
) -> WebSocketConnection:
    extra = [(k.encode(), v.encode()) for k, v in (headers or [])]
    return await connect_websocket_url(
        nursery, url, extra_headers=extra, message_queue_size=CLIENT_MESSAGE_QUEUE_SIZE
    )


class RelayWire:
    """``bench/relay.py``: join a pair by query string; frames are relayed verbatim."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def open_pair(self, nursery: trio.Nursery, index: int, spec: dict[str, Any]) -> PairLink:
        url = f"{self.base_url}/ws/relay?pair={index}"
        visitor = await connect(nursery, url + "&role=visitor")
        agent = await connect(nursery, url + "&role=agent")
        return PairLink(index=index, visitor=visitor, agent=agent)

    async def open_idle(
        self, nursery: trio.Nursery, index: int, spec: dict[str, Any]
    ) -> WebSocketConnection:
        return await connect(nursery, f"{self.base_url}/ws/relay?pair=idle{index}&role=visitor")

    def message_frame(self, role: str, link: PairLink, client_msg_id: str, body: str) -> str:
        return json.dumps({"type": "message", "client_msg_id": client_msg_id, "body": body})

    def parse(self, role: str, text: str) -> list[Parsed]:
        frame = json.loads(text)
        msg_id = frame.get("client_msg_id")
        return [Delivery(client_msg_id=msg_id) if isinstance(msg_id, str) else None]

    def heartbeat_frame(self) -> str | None:
        return None

    def history_frame(self, conversation_id: str, after_seq: int) -> str | None:
        return None

    async def reopen(
        self, nursery: trio.Nursery, role: str, links: list[PairLink], last_seq: dict[str, int]
    ) -> WebSocketConnection | None:
        return None

    @property
    def max_frames_per_10s(self) -> int | None:
        return None

    @property
    def acknowledges(self) -> bool:
        return False
