"""Single sign-on over HTTP against the local OpenID Connect provider the tests start.

The browser is played by hand: follow the redirects start → provider → callback, carrying the
SSO flow cookie, and check where the callback sends the browser and which session it opens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import trio

from storage import Role
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider, running_provider
from tests.web.client import Http, HttpResponse, _request_sync
from tests.web.server import TestServer, run_test_server


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with running_provider() as p:
        yield p


@pytest.fixture
async def sso_srv(tmp_path: Path) -> AsyncIterator[TestServer]:
    async with run_test_server(tmp_path, sso_allow_http_loopback=True) as server:
        yield server


async def owner_of(srv: TestServer) -> Http:
    http = Http(srv.base_url)
    assert (await http.login(srv.acme.owner.username, srv.acme.owner.password)).status == 200
    return http


def sso_body(provider: TestProvider, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slug": "acme",
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "role_claim": "roles",
        "role_map": {"support": "supervisor", "helpdesk": "agent"},
        "default_role": None,
        "sso_only": False,
    }
    body.update(changes)
    return body


async def configure(srv: TestServer, provider: TestProvider, **changes: Any) -> dict[str, Any]:
    owner = await owner_of(srv)
    resp = await owner.request("PUT", "/api/v1/settings/sso", sso_body(provider, **changes))
    assert resp.status == 200, resp.body
    return dict(resp.json())


async def get(url: str, cookie: str | None = None) -> HttpResponse:
    headers = {"Cookie": cookie} if cookie else {}
    return await trio.to_thread.run_sync(_request_sync, "GET", url, None, headers)


def cookie_value(resp: HttpResponse, name: str) -> str | None:
    for line in resp.headers.get("set-cookie", "").split("\n"):
        if line.startswith(name + "="):
            return line.split(";", 1)[0].split("=", 1)[1] or None
    return None


async def sign_in(srv: TestServer, slug: str = "acme") -> tuple[str, str | None]:
    """Walk the browser flow: (where the callback redirects, the session cookie it set)."""
    start = await get(f"{srv.base_url}/api/v1/auth/sso/{slug}/start")
    assert start.status == 302
    location = start.headers["location"]
    flow = cookie_value(start, "lc_sso")
    if flow is None:
        return location, None
    at_provider = await get(location)
    assert at_provider.status == 302, at_provider.body
    back = at_provider.headers["location"]
    assert back.startswith(srv.base_url + "/api/v1/auth/sso/callback?")
    callback = await get(back, cookie=f"lc_sso={flow}")
    assert callback.status == 302
    return callback.headers["location"], cookie_value(callback, "lc_session")


async def me_with(srv: TestServer, session: str) -> dict[str, Any]:
    http = Http(srv.base_url)
    http.cookie = session
    resp = await http.get("/api/v1/me")
    assert resp.status == 200, resp.body
    return dict(resp.json())


async def test_sso_creates_a_just_in_time_agent_with_the_mapped_role(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    out = await configure(sso_srv, provider)
    assert out["has_client_secret"] and "client_secret" not in out
    assert out["redirect_uri"] == sso_srv.base_url + "/api/v1/auth/sso/callback"
    where, session = await sign_in(sso_srv)
    assert where == "/console" and session
    me = await me_with(sso_srv, session)
    assert me["agent"]["role"] == "supervisor"  # "support" maps to supervisor
    assert me["agent"]["display_name"] == "Dana SSO"
    assert me["agent"]["username"] == "acme.dana"
    assert me["workspace"]["id"] == sso_srv.acme.id
    # The same subject signs in to the same agent; a changed claim changes the role.
    provider.user["roles"] = ["helpdesk"]
    _, session2 = await sign_in(sso_srv)
    assert session2 and session2 != session
    me2 = await me_with(sso_srv, session2)
    assert me2["agent"]["id"] == me["agent"]["id"] and me2["agent"]["role"] == "agent"
    owner = await owner_of(sso_srv)
    entries = (await owner.get("/api/v1/audit")).json()["entries"]
    created = next(e for e in entries if e["action"] == "agent.created")
    assert created["actor"] == "sso:acme" and created["details"]["via"] == "sso"
    assert any(
        e["action"] == "login.success" and e["details"].get("method") == "sso" for e in entries
    )


async def test_sso_refuses_a_user_without_a_mapped_role(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    provider.user["roles"] = ["marketing"]
    where, session = await sign_in(sso_srv)
    assert where == "/console?sso_error=sso_no_role" and session is None


@pytest.mark.parametrize("tamper", ["nonce", "audience", "signature"])
async def test_sso_refuses_an_id_token_that_fails_validation(
    sso_srv: TestServer, provider: TestProvider, tamper: str
) -> None:
    await configure(sso_srv, provider)
    provider.tamper = tamper
    where, session = await sign_in(sso_srv)
    assert where == "/console?sso_error=sso_invalid_token" and session is None


async def test_sso_callback_without_the_flow_cookie_or_with_another_state_is_refused(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    start = await get(f"{sso_srv.base_url}/api/v1/auth/sso/acme/start")
    at_provider = await get(start.headers["location"])
    back = at_provider.headers["location"]
    # Another browser (no flow cookie) cannot finish this sign-in (login CSRF).
    stolen = await get(back)
    assert stolen.headers["location"] == "/console?sso_error=sso_expired"
    assert cookie_value(stolen, "lc_session") is None
    flow = cookie_value(start, "lc_sso")
    query = parse_qs(urlsplit(back).query)
    swapped = back.replace(query["state"][0], "another-state")
    other = await get(swapped, cookie=f"lc_sso={flow}")
    assert other.headers["location"] == "/console?sso_error=sso_expired"
    assert provider.token_requests == 0  # refused before any call to the provider


async def test_sso_denied_by_the_provider_and_unknown_names_come_back_as_errors(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    provider.tamper = "deny"
    where, _ = await sign_in(sso_srv)
    assert where == "/console?sso_error=sso_denied"
    where, session = await sign_in(sso_srv, slug="nobody")
    assert where == "/console?sso_error=sso_unknown" and session is None


async def test_sso_only_refuses_passwords_except_the_owners(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider, sso_only=True)
    alice = sso_srv.acme.agents[0]
    refused = await Http(sso_srv.base_url).login(alice.username, alice.password)
    assert (refused.status, refused.error_code) == (403, "sso_required")
    # A wrong password still answers bad_credentials: no hint about the account.
    wrong = await Http(sso_srv.base_url).login(alice.username, "not her password")
    assert wrong.error_code == "bad_credentials"
    owner = await Http(sso_srv.base_url).login(
        sso_srv.acme.owner.username, sso_srv.acme.owner.password
    )
    assert owner.status == 200
    # Other workspaces keep their passwords.
    gina = sso_srv.globex.agents[0]
    assert (await Http(sso_srv.base_url).login(gina.username, gina.password)).status == 200


async def test_sso_configuration_is_validated_and_admin_only(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    owner = await owner_of(sso_srv)
    alice = Http(sso_srv.base_url)  # logged in before "SSO only" is switched on
    await alice.login(sso_srv.acme.agents[0].username, sso_srv.acme.agents[0].password)
    url = "/api/v1/settings/sso"
    assert (await owner.get(url)).status == 404
    first = sso_body(provider)
    del first["client_secret"]
    missing = await owner.request("PUT", url, first)
    assert (missing.status, missing.error_code) == (400, "missing_field")
    public_http = await owner.request("PUT", url, sso_body(provider, issuer="http://example.com"))
    assert (public_http.status, public_http.error_code) == (400, "invalid_value")
    bad_role = await owner.request("PUT", url, sso_body(provider, role_map={"x": "wizard"}))
    assert bad_role.status == 400
    assert (await owner.request("PUT", url, sso_body(provider))).status == 200
    # Updating without a secret keeps the stored one.
    keep = sso_body(provider, sso_only=True)
    del keep["client_secret"]
    kept = await owner.request("PUT", url, keep)
    assert kept.status == 200 and kept.json()["sso_only"] is True
    # Another workspace cannot take the same name.
    globex = Http(sso_srv.base_url)
    await globex.login(sso_srv.globex.owner.username, sso_srv.globex.owner.password)
    taken = await globex.request("PUT", url, sso_body(provider))
    assert (taken.status, taken.error_code) == (409, "slug_taken")
    assert (await alice.get(url)).status == 403
    assert (await alice.request("PUT", url, sso_body(provider))).status == 403
    assert (await owner.request("DELETE", url)).status == 200
    assert (await owner.get(url)).status == 404


async def test_plain_http_issuers_are_refused_unless_the_loopback_setting_is_on(
    srv: TestServer, provider: TestProvider
) -> None:
    owner = await owner_of(srv)
    resp = await owner.request("PUT", "/api/v1/settings/sso", sso_body(provider))
    assert (resp.status, resp.error_code) == (400, "invalid_value")
    assert "https" in resp.json()["error"]["message"]


async def test_a_downloaded_export_carries_no_two_factor_or_sso_secrets(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    owner = await owner_of(sso_srv)
    secret = (await owner.post("/api/v1/me/2fa/enroll")).json()["secret"]
    confirm = await owner.post("/api/v1/me/2fa/confirm", {"code": pyotp.TOTP(secret).now()})
    assert confirm.status == 200
    export = await owner.get("/api/v1/export?format=jsonl")
    assert export.status == 200
    text = export.body.decode()
    assert secret not in text and CLIENT_SECRET not in text
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    by_table = {r["table"]: r["row"] for r in rows if "table" in r}
    assert by_table["agent_two_factor"]["totp_secret"] is None
    assert by_table["agent_two_factor"]["recovery_hashes"] is None
    assert by_table["workspace_sso"]["client_secret"] is None
    assert by_table["workspace_sso"]["issuer"] == provider.issuer


async def test_sign_in_clicks_do_not_each_fetch_the_discovery_document(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    for _ in range(5):
        start = await get(f"{sso_srv.base_url}/api/v1/auth/sso/acme/start")
        assert start.status == 302
    assert provider.discovery_requests == 1
    where, session = await sign_in(sso_srv)  # the callback reuses it too
    assert where == "/console" and session
    assert provider.discovery_requests == 1


async def test_an_unreachable_provider_is_reported_not_an_internal_error(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    await configure(sso_srv, provider)
    provider.stop()
    where, session = await sign_in(sso_srv)
    assert where == "/console?sso_error=sso_unavailable" and session is None


async def test_a_provider_that_never_answers_is_given_up_within_the_timeout(
    tmp_path: Path, provider: TestProvider
) -> None:
    async with run_test_server(
        tmp_path, sso_allow_http_loopback=True, sso_http_timeout_s=0.5
    ) as srv:
        await configure(srv, provider)
        provider.tamper = "hang"
        with trio.fail_after(10):  # the provider would hold the request for 30 s
            where, session = await sign_in(srv)
        assert where == "/console?sso_error=sso_unavailable" and session is None
        provider.released.set()


async def test_two_first_sign_ins_of_one_subject_end_with_one_active_agent(
    sso_srv: TestServer, provider: TestProvider
) -> None:
    from web.api_security import _jit_agent

    await configure(sso_srv, provider)
    services = sso_srv.services
    assert services is not None
    config = await services.storage.get_sso_config(sso_srv.acme.id)
    assert config is not None
    claims = {"sub": "racer", "preferred_username": "racer", "name": "Racer"}
    # Both callbacks found no link and create an agent; the second one's link collides.
    first = await _jit_agent(services, config, claims, Role.AGENT)
    second = await _jit_agent(services, config, claims, Role.AGENT)
    assert second.id == first.id
    racers = [
        a for a in await services.storage.list_agents(sso_srv.acme.id) if a.display_name == "Racer"
    ]
    assert len(racers) == 2 and [a.enabled for a in racers].count(True) == 1
