"""A refused message always says how long to wait: never ``retry_after_s`` 0 ("retry now")."""

from __future__ import annotations

import pytest

from engine.errors import RateLimited
from engine.messages import SendMessage
from tests.engine.conftest import World


async def test_a_sub_millisecond_wait_is_rounded_up_not_down_to_zero(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = await world.connect(await world.visitor())
    # The bucket is 0.4 ms short of a token: rounded to 3 places that was 0.0, and a client
    # told to retry after 0 s came straight back and was refused again.
    monkeypatch.setattr(world.engine._messages, "check", lambda key: 0.0004)
    with pytest.raises(RateLimited) as info:
        await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert info.value.retry_after_s == 0.001
