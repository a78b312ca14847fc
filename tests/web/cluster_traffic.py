"""Chat traffic for the cluster's failure tests (issue 13): visitor/agent pairs that send
continuously through two node processes while a test breaks something, and the checks that
nothing acknowledged was lost, duplicated or reordered.

Each client behaves as the widget and the console do (``widget/client.js``): one message at a
time with its own ``client_msg_id``, sent again with the same id after an error or a closed
socket until it is acknowledged; a closed socket is reopened after a short backoff, on the next
node when the one it used refuses connections (as a load balancer would send it there), with
``resume``/``watch`` from the last sequence number it saw. Everything it hears is recorded:
acknowledgements, error codes, close codes, and the sequence numbers of the events pushed to it.

The checks read the database itself (``psql``), not the system under test.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from tests.pg import psql
from tests.web.client import Http, Peer, open_peer

SITE = "http://site.test"
SEND_INTERVAL_S = 0.1  # each client's pace: a message, then this pause
BACKOFF_S = 0.2  # after an error or a closed socket, as the widget backs off
# Errors a client may hear while a part of the cluster fails: each says what to do (retry).
CLEAR_ERRORS = frozenset(
    {"storage_unavailable", "overloaded", "unavailable", "shutting_down", "rate_limited"}
)
# Close codes a client may see then: going away (1001) or try again later (1013).
CLEAR_CLOSES = frozenset({1001, 1013})
# so the pace above is never throttled: the test is about failures, not rate limits
UNLIMITED_ENV = {
    "LIVECHAT_RATE_LIMITS__MESSAGES_PER_10S": "100000",
    "LIVECHAT_RATE_LIMITS__FRAMES_PER_10S": "100000",
    "LIVECHAT_RATE_LIMITS__IP_MESSAGES_PER_10S": "100000",
    "LIVECHAT_RATE_LIMITS__NEW_CONVERSATIONS_PER_HOUR": "100000",
    "LIVECHAT_ENGINE__MESSAGE_RATE_PER_S": "1000",
    "LIVECHAT_ENGINE__MESSAGE_BURST": "1000",
}

HELLO = {"identity": None, "page": None}
PROTOCOL = 2  # as the widget and the console speak: a message's result carries its event


class Progress:
    """The acknowledgements all clients got so far, and a way to wait for more."""

    def __init__(self) -> None:
        self.acked = 0
        self._changed = trio.Event()

    def add(self) -> None:
        self.acked += 1
        self._changed.set()
        self._changed = trio.Event()

    async def more(self, count: int) -> None:
        """Until ``count`` acknowledgements more than now came in."""
        target = self.acked + count
        while self.acked < target:
            await self._changed.wait()


class Refused(Exception):
    """The handshake's result was an error (the client backs off and tries again)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@attrs.define(eq=False)
class Client:
    """One side of a pair: where it connects, what it was told, what it saw."""

    name: str
    urls: list[str]  # tried in turn: the first, then the next when one refuses connections
    conversation_id: str
    progress: Progress
    token: str | None = None  # a visitor's token; None for an agent (its session cookie)
    cookie: str | None = None
    acked: dict[str, int] = attrs.field(factory=dict)  # client_msg_id -> seq
    errors: Counter[str] = attrs.field(factory=Counter)
    closes: Counter[int | None] = attrs.field(factory=Counter)
    seen: set[int] = attrs.field(factory=set)  # seqs of events of its chat it was pushed
    twice: list[int] = attrs.field(factory=list)  # seqs pushed to it again (none expected)
    last_seq: int = 0  # the highest seen: what it resumes from
    at: int = 0  # index in urls
    trace: list[str] = attrs.field(factory=list)  # what happened, for a failing check

    @property
    def agent(self) -> bool:
        return self.token is None

    def _note(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "event":
            event = frame["event"]
            if event["conversation_id"] == self.conversation_id:
                self.trace.append(f"push {event['seq']}")
                if int(event["seq"]) in self.seen:  # resuming from the last seen: no overlap
                    self.twice.append(int(event["seq"]))
                self.seen.add(int(event["seq"]))
                self.last_seq = max(self.last_seq, int(event["seq"]))

    async def _open(self, peer: Peer) -> None:
        """Say hello (a visitor, resuming) or auth then watch (an agent, from ``last_seq``)."""
        self.trace.append(f"open {self.urls[self.at]} from {self.last_seq}")
        if self.agent:
            reply = await peer.request("auth", token=None, protocol=PROTOCOL)
            if reply["type"] == "result":
                reply = await peer.request(
                    "watch", conversation_id=self.conversation_id, after_seq=self.last_seq
                )
        else:
            resume = {self.conversation_id: self.last_seq}
            reply = await peer.request(
                "hello", token=self.token, resume=resume, protocol=PROTOCOL, **HELLO
            )
        if reply["type"] != "result":
            raise Refused(str(reply.get("code")))
        self._drain(peer)

    def _drain(self, peer: Peer) -> None:
        for frame in peer.pushes:
            self._note(frame)
        peer.pushes.clear()

    async def _send(self, peer: Peer, client_msg_id: str) -> bool:
        fields: dict[str, Any] = {"client_msg_id": client_msg_id, "text": client_msg_id}
        if self.agent:
            fields["conversation_id"] = self.conversation_id
        reply = await peer.request("send_message", timeout=30, **fields)
        self._drain(peer)
        if reply["type"] == "result":
            seq = int(reply["result"]["seq"])
            self.trace.append(f"ack {client_msg_id} {seq}")
            self.acked[client_msg_id] = seq
            if "event" in reply["result"]:  # what the widget counts as seen (client.js)
                self._note({"type": "event", "event": reply["result"]["event"]})
            self.progress.add()
            return True
        code = str(reply.get("code"))
        self.trace.append(f"error {client_msg_id} {code}")
        self.errors[code] += 1
        await trio.sleep(float(reply.get("retry_after_s") or BACKOFF_S))
        return False

    async def run(self, stop: trio.Event) -> None:
        """Send ``<name>-0``, ``<name>-1``... until ``stop``; the message in flight when it is
        set is still sent until acknowledged (a client never gives a message up)."""
        numbers = itertools.count()
        pending: str | None = None
        while True:
            opened = False
            try:
                async with open_peer(
                    self.urls[self.at], origin=None if self.agent else SITE, cookie=self.cookie
                ) as peer:
                    await self._open(peer)
                    opened = True
                    while True:
                        if pending is None:
                            if stop.is_set():
                                return
                            pending = f"{self.name}-{next(numbers)}"
                        if await self._send(peer, pending):
                            pending = None
                            await trio.sleep(SEND_INTERVAL_S)
            except ConnectionClosed as closed:
                self.trace.append(f"closed {closed.reason}")
                self.closes[closed.reason.code if closed.reason else None] += 1
            except Refused as refused:
                self.errors[refused.code] += 1
            except (HandshakeError, OSError):  # its node is gone
                self.closes[None] += 1
            if not opened:  # refused or gone: a load balancer would send it elsewhere
                self.at = (self.at + 1) % len(self.urls)
            await trio.sleep(BACKOFF_S)  # deliberate: the widget's backoff

    async def catch_up(self, upto: int) -> None:
        """Connect once more and read until every seq up to ``upto`` was pushed to it."""
        while True:
            try:
                async with open_peer(
                    self.urls[self.at], origin=None if self.agent else SITE, cookie=self.cookie
                ) as peer:
                    await self._open(peer)
                    while self.last_seq < upto:
                        self._note(await peer.recv(timeout=30))
                    return
            except ConnectionClosed as closed:
                self.closes[closed.reason.code if closed.reason else None] += 1
            except Refused as refused:
                self.errors[refused.code] += 1
            except (HandshakeError, OSError):
                self.closes[None] += 1
            self.at = (self.at + 1) % len(self.urls)
            await trio.sleep(BACKOFF_S)  # deliberate: the widget's backoff


@attrs.define(eq=False)
class Pair:
    visitor: Client
    agent: Client


def credentials(banner: str) -> tuple[str, str]:
    """The owner account's password and the widget key, from the first node's banner."""
    password = re.search(r"owner: username 'owner' password '([^']+)'", banner)
    key = re.search(r"widget key ([^)]+)\)", banner)
    assert password and key, banner
    return password[1], key[1]


async def open_pairs(bases: list[str], banner: str, count: int, progress: Progress) -> list[Pair]:
    """``count`` chats, opened one after the other: pair ``i``'s visitor uses node ``i % n``
    first and its agent (the workspace owner's account, a supervisor: it may write in any
    chat) node ``i + 1``, so both directions cross nodes and both nodes serve each side."""
    password, widget_key = credentials(banner)
    http = Http(bases[0])
    assert (await http.login("owner", password)).status == 200
    ws = [b.replace("http://", "ws://") for b in bases]
    pairs = []
    for i in range(count):
        first = ws[i % len(ws) :] + ws[: i % len(ws)]
        second = first[1:] + first[:1]
        visitor_urls = [f"{u}/ws/v1/visitor?key={widget_key}" for u in first]
        async with open_peer(visitor_urls[0], origin=SITE) as peer:
            welcome = await peer.request("hello", token=None, resume={}, **HELLO)
            opened = await peer.request("send_message", client_msg_id="open", text="open")
            assert opened["type"] == "result", opened
        conv_id = opened["result"]["conversation_id"]
        visitor = Client(
            name=f"v{i}",
            urls=visitor_urls,
            conversation_id=conv_id,
            progress=progress,
            token=welcome["result"]["visitor_token"],
        )
        agent = Client(
            name=f"a{i}",
            urls=[f"{u}/ws/v1/agent" for u in second],
            conversation_id=conv_id,
            progress=progress,
            cookie=http.cookie,
        )
        pairs.append(Pair(visitor, agent))
    return pairs


def clients(pairs: list[Pair]) -> list[Client]:
    return [c for p in pairs for c in (p.visitor, p.agent)]


def stored(url: str, conversation_id: str) -> list[tuple[int, str, str | None]]:
    """(seq, kind, client_msg_id) of the chat's events, in order, as the database has them."""
    schema = re.search(r"search_path=(\w+)", url)
    assert schema
    rows = psql(
        url,
        "SELECT seq || '|' || kind || '|' || coalesce(client_msg_id, '')"
        f" FROM {schema[1]}.events WHERE conversation_id = '{conversation_id}' ORDER BY seq",
    )
    events = []
    for row in rows.split():
        seq, kind, client_msg_id = row.split("|")
        events.append((int(seq), kind, client_msg_id or None))
    return events


async def check_nothing_lost(url: str, pairs: list[Pair]) -> None:
    """Every conversation gapless; every acknowledged message stored, at the sequence number
    its acknowledgement gave; every stored message acknowledged (a client only stops once its
    last message was), so nothing was stored twice or without its sender hearing of it; each
    client was pushed every message of its chat (after one last resume), and none twice."""
    for pair in pairs:
        events = stored(url, pair.visitor.conversation_id)
        seqs = [seq for seq, _, _ in events]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # gapless
        by_id = {cmid: seq for seq, kind, cmid in events if kind == "message" and cmid}
        acked = {"open": by_id.get("open")} | pair.visitor.acked | pair.agent.acked
        assert by_id == acked, set(by_id.items()) ^ set(acked.items())
        for client in (pair.visitor, pair.agent):
            assert client.acked, f"{client.name} never got a message through"
        messages = {seq for seq, kind, _ in events if kind == "message"}
        for client in (pair.visitor, pair.agent):
            await client.catch_up(max(messages))
            missing = sorted(messages - client.seen)
            assert not missing, (client.name, missing, client.trace[-40:])
            assert not client.twice, (client.name, client.twice, client.trace[-40:])


def unclear(pairs: list[Pair], *, killed: bool = False) -> dict[str, object]:
    """Errors and close codes a client heard that do not say "retry" (none expected); with
    ``killed``, a node was killed: its own sockets ended without a close frame (1006)."""
    allowed = CLEAR_CLOSES | {None} | ({1006} if killed else set())
    errors: Counter[str] = Counter()
    closes: Counter[int | None] = Counter()
    for client in clients(pairs):
        errors.update({k: v for k, v in client.errors.items() if k not in CLEAR_ERRORS})
        closes.update({k: v for k, v in client.closes.items() if k not in allowed})
    return {"errors": dict(errors), "closes": dict(closes)}


def heard(pairs: list[Pair]) -> dict[str, object]:
    """Every error and close code heard, summed over the clients (for the test's output)."""
    errors: Counter[str] = Counter()
    closes: Counter[int | None] = Counter()
    for client in clients(pairs):
        errors.update(client.errors)
        closes.update(client.closes)
    return {"errors": dict(errors), "closes": dict(closes)}


def start_traffic(pairs: list[Pair], stop: trio.Event, nursery: trio.Nursery) -> None:
    """Every client sends in a task of ``nursery`` until ``stop`` (and its last message's
    acknowledgement) ends it."""
    for client in clients(pairs):
        nursery.start_soon(client.run, stop)


def report(pairs: list[Pair], logs: list[str]) -> None:
    """What the clients heard and the end of each node's log (pytest shows it on failure)."""
    print("heard:", heard(pairs))
    for client in clients(pairs):
        print(client.name, len(client.acked), "acked; last:", client.trace[-10:])
    for log in logs:
        print("--- node log (end) ---", *log.splitlines()[-40:], sep="\n")
