"""Business hours over real HTTP: the admin API validates and stores them, and the public
widget configuration says the workspace is closed, so the widget offers the offline form."""

from __future__ import annotations

from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer

URL = "/api/v1/settings/hours"


async def test_hours_are_validated_with_the_field_that_is_wrong(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    assert (await admin.get(URL)).json() == {
        "hours": {
            "enabled": False,
            "time_zone": "UTC",
            "weekly": [],
            "holidays": [],
            "groups": [],
        },
        "open_now": True,
    }
    cases = [
        ({"enabled": True, "time_zone": "Mars/Olympus"}, "$.time_zone"),
        (
            {"enabled": True, "weekly": [{"day": "mon", "open": "17:00", "close": "09:00"}]},
            "$.weekly[0]",
        ),
        ({"enabled": True, "holidays": ["2026-02-30"]}, "$.holidays[0]"),
        (
            {"enabled": True, "groups": [{"group_id": "nope", "time_zone": "UTC"}]},
            "$.groups[0].group_id",
        ),
    ]
    for body, field in cases:
        resp = await admin.request("PUT", URL, body)
        assert resp.status == 400, resp.body
        assert (resp.error_code, resp.json()["error"]["field"]) == ("invalid_value", field)
    bad_time = await admin.request(
        "PUT", URL, {"weekly": [{"day": "mon", "open": "9:00", "close": "17:00"}]}
    )
    assert bad_time.status == 400


async def test_closed_hours_make_the_widget_offer_the_offline_form(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    async with open_peer(srv.agent_ws_url) as agent:
        assert (await agent.request("auth", token=srv.acme.agents[0].token))["type"] == "result"
        closed = await admin.request(
            "PUT", URL, {"enabled": True, "time_zone": "Europe/Paris", "weekly": []}
        )
        assert closed.status == 200, closed.body
        assert closed.json()["open_now"] is False
        config = await Http(srv.base_url).get(f"/api/v1/widget/config?key={srv.acme.widget_key}")
        assert (config.json()["open"], config.json()["online"]) == (False, False)
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as peer:
            hello = await visitor(srv, peer)
            assert hello["welcome"]["agents_available"] is False
            assert hello["widget"]["open"] is False
        week = [
            {"day": d, "open": "00:00", "close": "24:00"}
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        ]
        opened = await admin.request(
            "PUT", URL, {"enabled": True, "time_zone": "Europe/Paris", "weekly": week}
        )
        assert opened.json()["open_now"] is True
        config = await Http(srv.base_url).get(f"/api/v1/widget/config?key={srv.acme.widget_key}")
        assert config.json()["open"] is True
