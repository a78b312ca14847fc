"""Visitor identification in the engine: the device token, a site-signed identity, a forgery."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from engine import IdentifiedVisitor, InvalidIdentity, VisitorIdentity
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
