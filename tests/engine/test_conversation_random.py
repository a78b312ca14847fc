"""Random concurrent commands through the real engine and SQLite: the conversation shell keeps
what the pure core promises (see ``test_conversation_properties``) once batches, the group
commit, the router and the fan-out are in play."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
import trio

from engine.conversation_state import violations
from engine.errors import DomainError
from engine.messages import (
    Accept,
    AddNote,
    Close,
    EndChat,
    Join,
    Leave,
    MessageAck,
    Rate,
    SendMessage,
    Tag,
    Transfer,
    Whisper,
)
from storage.api import ConversationState, EventKind, Role, Visibility
from tests.engine.conftest import Client, World

SEEDS = (1, 2, 3)
COMMANDS_PER_TASK = 25


def _command(rng: random.Random, who: str, cid: str, n: int, agent_ids: list[str]) -> Any:
    mid = f"{who}-{n}" if rng.random() > 0.1 else f"{who}-{max(0, n - 1)}"  # some retries
    if who == "visitor":
        return rng.choice(
            [
                SendMessage(conversation_id=cid, client_msg_id=mid, text="hi"),
                SendMessage(conversation_id=cid, client_msg_id=mid, text="more"),
                Rate(conversation_id=cid, rating=rng.randint(1, 5)),
                EndChat(conversation_id=cid),
            ]
        )
    return rng.choice(
        [
            SendMessage(conversation_id=cid, client_msg_id=mid, text="hello"),
            SendMessage(conversation_id=cid, client_msg_id=mid, text="sure"),
            Accept(conversation_id=cid),
            AddNote(conversation_id=cid, client_msg_id=mid, text="note"),
            Whisper(conversation_id=cid, client_msg_id=mid, text="psst"),
            Join(conversation_id=cid, silent=rng.random() < 0.5),
            Leave(conversation_id=cid),
            Transfer(conversation_id=cid, to_agent_id=rng.choice(agent_ids)),
            Tag(conversation_id=cid, add=("vip",)),
            Close(conversation_id=cid),
        ]
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_concurrent_commands_keep_seqs_gapless_and_chats_consistent(
    world: World, seed: int
) -> None:
    rng = random.Random(seed)
    agents = [
        await world.agent("ann"),
        await world.agent("bob"),
        await world.agent("sue", role=Role.SUPERVISOR),
    ]
    clients = {a.agent_id: await world.connect(a) for a in agents}
    visitors: list[Client] = []
    cids: list[str] = []
    for _ in range(2):
        v = await world.connect(await world.visitor())
        ack = await world.engine.request(v.conn, SendMessage(client_msg_id="start", text="hi"))
        assert isinstance(ack, MessageAck)
        visitors.append(v)
        cids.append(ack.conversation_id)
    agent_ids = [a.agent_id for a in agents]
    done: list[str] = []

    async def act(client: Client, who: str, task_rng: random.Random) -> None:
        for n in range(COMMANDS_PER_TASK):
            index = task_rng.randrange(len(cids))
            if who == "visitor" and client is not visitors[index]:
                index = visitors.index(client)
            cmd = _command(task_rng, who, cids[index], n, agent_ids)
            with trio.fail_after(30), contextlib.suppress(DomainError):
                await world.engine.request(client.conn, cmd)  # refused ones store nothing
                done.append(type(cmd).__name__)

    async with trio.open_nursery() as nursery:
        for i, v in enumerate(visitors):
            nursery.start_soon(act, v, "visitor", random.Random(rng.random() + i))
        for i, client in enumerate(clients.values()):
            nursery.start_soon(act, client, f"agent{i}", random.Random(rng.random() + 10 + i))

    assert {"SendMessage", "Accept"} <= set(done), done  # the chats did get somewhere
    for cid, v in zip(cids, visitors, strict=True):
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        assert conv is not None
        assert violations(conv) == []
        if conv.state == ConversationState.ACTIVE:
            assert conv.assignee_id in agent_ids
        events = await world.storage.history(world.workspace_id, cid, after_seq=0, limit=500)
        assert [e.seq for e in events] == list(range(1, conv.last_seq + 1))
        # The visitor's own socket never carried an agents-only event.
        for event in v.events():
            if event.conversation_id == cid:
                assert event.visibility == str(Visibility.ALL), event
                assert event.kind not in (EventKind.NOTE, EventKind.WHISPER), event
