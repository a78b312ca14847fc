"""Visitor identification in the engine: the device token, a site-signed identity, a forgery."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from engine import (
    ConnectionMeta,
    IdentifiedVisitor,
    InvalidIdentity,
    MessageAck,
    SendMessage,
    VisitorIdentity,
    VisitorPrincipal,
)
from engine.messages import ListVisitors, VisitorList
from storage import Workspace
from tests.engine.conftest import World


def signed(workspace: Workspace, user_id: str) -> VisitorIdentity:
    mac = hmac.new(workspace.identity_secret.encode(), user_id.encode(), hashlib.sha256)
    return VisitorIdentity(user_id=user_id, signature=mac.hexdigest().upper())


async def identify(
    world: World,
    *,
    token: str | None = None,
    identity: VisitorIdentity | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> IdentifiedVisitor:
    workspace = await world.storage.get_workspace(world.workspace_id)
    assert workspace is not None
    return await world.engine.identify_visitor(
        workspace, token=token, identity=identity, user_agent=user_agent, ip=ip
    )


async def test_a_returning_device_keeps_its_visitor_and_token(world: World) -> None:
    first = await identify(world, user_agent="Firefox", ip="192.0.2.1")
    assert first.token.startswith("lcv_") and not first.identified
    again = await identify(world, token=first.token)
    assert again.visitor.id == first.visitor.id and again.token == first.token
    stranger = await identify(world, token="lcv_guessed")
    assert stranger.visitor.id != first.visitor.id and stranger.token != "lcv_guessed"


async def test_a_signed_identity_finds_the_user_on_another_device(world: World) -> None:
    workspace = await world.storage.get_workspace(world.workspace_id)
    assert workspace is not None
    laptop = await identify(world)
    adopted = await identify(world, token=laptop.token, identity=signed(workspace, "u-42"))
    # the anonymous visitor of this device becomes the user, first time seen
    assert adopted.visitor.id == laptop.visitor.id
    assert adopted.visitor.external_id == "u-42"
    assert adopted.identified and adopted.first_time
    phone = await identify(world, identity=signed(workspace, "u-42"))
    assert phone.visitor.id == laptop.visitor.id
    assert phone.identified and not phone.first_time
    assert phone.token != laptop.token  # a token of its own for the new device


async def test_a_forged_identity_is_refused_and_creates_nothing(world: World) -> None:
    workspace = await world.storage.get_workspace(world.workspace_id)
    assert workspace is not None
    forged = VisitorIdentity(user_id="u-42", signature="00" * 32)
    with pytest.raises(InvalidIdentity) as caught:
        await identify(world, identity=forged)
    assert caught.value.code == "invalid_identity"
    assert caught.value.field == "identity.signature"
    assert await world.storage.find_visitor_by_external_id(world.workspace_id, "u-42") is None
    too_long = signed(workspace, "x" * 257)
    with pytest.raises(InvalidIdentity):
        await identify(world, identity=too_long)


async def test_a_new_visitor_arrives_with_the_row_identify_wrote(world: World) -> None:
    # Its actor starts from that row (no read back): device, IP and the live list are right,
    # and a first message opens its chat (it has none yet).
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    found = await identify(world, user_agent=firefox, ip="192.0.2.7")
    assert found.created
    principal = VisitorPrincipal(workspace_id=world.workspace_id, visitor_id=found.visitor.id)
    agent = await world.connect(await world.agent("alice"))
    meta = ConnectionMeta(user_agent=firefox, ip="192.0.2.7")
    client = await world.connect(principal, meta=meta, new_visitor=found.visitor)
    assert client.conn.welcome is not None
    listed = await world.engine.request(agent.conn, ListVisitors(subscribe=False))
    assert isinstance(listed, VisitorList)
    [seen] = listed.visitors
    assert (seen.visitor_id, seen.browser, seen.ip) == (found.visitor.id, "Firefox", "192.0.2.7")
    ack = await world.engine.request(client.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck) and ack.conversation_id
    # A second connection of the visitor finds the actor (and its chat) as it is.
    again = await world.connect(principal)
    assert again.conn.welcome is not None
