"""Two-factor login over HTTP: enrollment, the second login step, recovery codes, throttling,
the workspace policy and the admin reset.

Codes are computed with pyotp like an authenticator app would. A code is never accepted twice,
so each test confirms with the current step's code and logs in with the next step's (the
server accepts one step either side), which holds whatever the wall clock does meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pyotp
import trio

from tests.web.client import Http, bearer
from tests.web.server import Account, TestServer
from web.ratelimit import LoginThrottle


def code_at(secret: str, steps_ahead: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead))


async def logged_in(srv: TestServer, account: Account) -> Http:
    http = Http(srv.base_url)
    resp = await http.login(account.username, account.password)
    assert resp.status == 200, resp.body
    return http


async def enroll(http: Http) -> tuple[str, list[str]]:
    """Enable two-factor login for the logged-in account: (secret, recovery codes)."""
    start = await http.post("/api/v1/me/2fa/enroll")
    assert start.status == 200, start.body
    body = start.json()
    secret = body["secret"]
    assert body["otpauth_uri"].startswith("otpauth://totp/") and secret in body["otpauth_uri"]
    assert body["qr_svg"].startswith("data:image/svg+xml")
    done = await http.post("/api/v1/me/2fa/confirm", {"code": code_at(secret)})
    assert done.status == 200, done.body
    codes = done.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


async def password_step(srv: TestServer, account: Account) -> tuple[Http, dict[str, Any]]:
    http = Http(srv.base_url)
    resp = await http.login(account.username, account.password)
    assert resp.status == 200, resp.body
    return http, resp.json()


async def test_login_with_two_factor_needs_a_code_before_any_session(srv: TestServer) -> None:
    alice = srv.acme.agents[0]
    secret, _ = await enroll(await logged_in(srv, alice))
    http, pending = await password_step(srv, alice)
    assert pending["second_factor"] == "totp" and "csrf_token" not in pending
    assert http.cookie is None  # no session cookie after the password alone
    # The pending token opens nothing by itself.
    assert (await http.get("/api/v1/me")).status == 401
    http.bearer = pending["pending_token"]
    assert (await http.get("/api/v1/me")).status == 401
    http.bearer = None
    wrong = await http.post(
        "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": "000000"}
    )
    assert (wrong.status, wrong.error_code) == (401, "bad_second_factor")
    ok = await http.post(
        "/api/v1/auth/login/2fa",
        {"pending_token": pending["pending_token"], "code": code_at(secret, 1)},
    )
    assert ok.status == 200, ok.body
    assert ok.json()["agent"]["username"] == alice.username and http.cookie
    http.csrf = ok.json()["csrf_token"]
    status = (await http.get("/api/v1/me/2fa")).json()
    assert status == {"enabled": True, "recovery_codes_left": 10, "required": False}


async def test_a_totp_code_is_never_accepted_twice(srv: TestServer) -> None:
    alice = srv.acme.agents[0]
    secret, _ = await enroll(await logged_in(srv, alice))
    http, pending = await password_step(srv, alice)
    # The code that confirmed the enrollment was spent then.
    replay = await http.post(
        "/api/v1/auth/login/2fa",
        {"pending_token": pending["pending_token"], "code": code_at(secret)},
    )
    assert (replay.status, replay.error_code) == (401, "bad_second_factor")
    code = code_at(secret, 1)
    first = await http.post(
        "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": code}
    )
    assert first.status == 200
    again = await Http(srv.base_url).post(
        "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": code}
    )
    assert (again.status, again.error_code) == (401, "bad_second_factor")


async def test_a_recovery_code_logs_in_once_and_is_audited(srv: TestServer) -> None:
    bob = srv.acme.agents[1]
    _, codes = await enroll(await logged_in(srv, bob))
    http, pending = await password_step(srv, bob)
    typed = codes[3].lower().replace("-", " ")  # case, spaces and dashes do not matter
    ok = await http.post(
        "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": typed}
    )
    assert ok.status == 200, ok.body
    http.csrf = ok.json()["csrf_token"]
    assert (await http.get("/api/v1/me/2fa")).json()["recovery_codes_left"] == 9
    _, pending2 = await password_step(srv, bob)
    spent = await Http(srv.base_url).post(
        "/api/v1/auth/login/2fa", {"pending_token": pending2["pending_token"], "code": codes[3]}
    )
    assert (spent.status, spent.error_code) == (401, "bad_second_factor")
    owner = await logged_in(srv, srv.acme.owner)
    actions = [e["action"] for e in (await owner.get("/api/v1/audit")).json()["entries"]]
    assert "2fa.recovery_code_used" in actions and "2fa.enabled" in actions


async def test_second_factor_guesses_count_against_the_login_throttle(srv: TestServer) -> None:
    assert srv.services is not None
    settings = srv.services.settings
    now = [1000.0]
    srv.services.login_throttle = LoginThrottle(
        free_failures=settings.accounts.login_failures_per_account_backoff_after,
        max_backoff_s=settings.accounts.login_backoff_max_s,
        ip_failures=settings.accounts.login_failures_per_ip_per_15min,
        clock=lambda: now[0],
    )
    alice = srv.acme.agents[0]
    secret, _ = await enroll(await logged_in(srv, alice))
    for _ in range(3):
        # Redoing the (right) password step does not reset the count of wrong codes.
        http, pending = await password_step(srv, alice)
        wrong = await http.post(
            "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": "123456"}
        )
        assert wrong.error_code == "bad_second_factor"
    throttled = await http.post(
        "/api/v1/auth/login/2fa",
        {"pending_token": pending["pending_token"], "code": code_at(secret, 1)},
    )
    assert (throttled.status, throttled.error_code) == (429, "login_throttled")
    assert int(throttled.headers["retry-after"]) >= 1
    assert (await Http(srv.base_url).login(alice.username, alice.password)).status == 429
    now[0] += 2.0
    ok = await http.post(
        "/api/v1/auth/login/2fa",
        {"pending_token": pending["pending_token"], "code": code_at(secret, 1)},
    )
    assert ok.status == 200


async def test_pending_tokens_expire_are_tamper_proof_and_die_with_the_password(
    srv: TestServer,
) -> None:
    alice = srv.acme.agents[0]
    session = await logged_in(srv, alice)
    secret, _ = await enroll(session)
    http, pending = await password_step(srv, alice)
    token = pending["pending_token"]
    body, _, mac = token.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    for bad in (forged, "garbage", token + "x"):
        resp = await http.post("/api/v1/auth/login/2fa", {"pending_token": bad, "code": "123456"})
        assert (resp.status, resp.error_code) == (401, "login_expired")
    new_password = "a brand new password 42"
    changed = await session.post(
        "/api/v1/auth/password",
        {"current_password": alice.password, "new_password": new_password},
    )
    assert changed.status == 200
    late = await http.post(
        "/api/v1/auth/login/2fa", {"pending_token": token, "code": code_at(secret, 1)}
    )
    assert (late.status, late.error_code) == (401, "login_expired")


async def test_workspace_policy_forces_enrollment_before_the_first_session(
    srv: TestServer,
) -> None:
    owner = await logged_in(srv, srv.acme.owner)
    policy = await owner.request("PUT", "/api/v1/settings/security", {"require_2fa": "all"})
    assert policy.status == 200 and policy.json()["require_2fa"] == "all"
    bob = srv.acme.agents[1]
    http, pending = await password_step(srv, bob)
    assert pending["second_factor"] == "enroll" and http.cookie is None
    # The login cannot be finished with a code before enrolling.
    early = await http.post(
        "/api/v1/auth/login/2fa", {"pending_token": pending["pending_token"], "code": "123456"}
    )
    assert (early.status, early.error_code) == (409, "two_factor_not_set")
    start = await http.post("/api/v1/auth/2fa/enroll", {"pending_token": pending["pending_token"]})
    assert start.status == 200
    secret = start.json()["secret"]
    done = await http.post(
        "/api/v1/auth/2fa/enroll/confirm",
        {"pending_token": pending["pending_token"], "code": code_at(secret)},
    )
    assert done.status == 200, done.body
    assert len(done.json()["recovery_codes"]) == 10 and http.cookie
    me = await http.get("/api/v1/me")
    assert me.status == 200 and me.json()["agent"]["username"] == bob.username
    http.csrf = me.json()["csrf_token"]
    # Required: it cannot be turned off by the agent.
    off = await http.post("/api/v1/me/2fa/disable", {"code": code_at(secret, 1)})
    assert (off.status, off.error_code) == (403, "two_factor_required")
    # Other workspaces are not affected.
    assert (
        (
            await Http(srv.base_url).login(
                srv.globex.agents[0].username, srv.globex.agents[0].password
            )
        )
        .json()
        .get("agent")
    )


async def test_admins_policy_leaves_agents_alone(srv: TestServer) -> None:
    owner = await logged_in(srv, srv.acme.owner)
    await owner.request("PUT", "/api/v1/settings/security", {"require_2fa": "admins"})
    alice = srv.acme.agents[0]
    assert "agent" in (await Http(srv.base_url).login(alice.username, alice.password)).json()
    again = await Http(srv.base_url).login(srv.acme.owner.username, srv.acme.owner.password)
    assert again.json()["second_factor"] == "enroll"
    bad = await owner.request("PUT", "/api/v1/settings/security", {"require_2fa": "some"})
    assert (bad.status, bad.error_code) == (400, "invalid_value")


async def test_admin_reset_removes_two_factor_ends_sessions_and_is_audited(
    srv: TestServer,
) -> None:
    alice = srv.acme.agents[0]
    session = await logged_in(srv, alice)
    await enroll(session)
    owner = await logged_in(srv, srv.acme.owner)
    overview = (await owner.get("/api/v1/settings/security")).json()
    assert alice.id in overview["two_factor_agent_ids"]
    # An agent cannot reset anybody; another workspace's admin cannot see her.
    assert (await session.post(f"/api/v1/agents/{alice.id}/2fa/reset")).status == 403
    globex = await logged_in(srv, srv.globex.owner)
    assert (await globex.post(f"/api/v1/agents/{alice.id}/2fa/reset")).status == 404
    reset = await owner.post(f"/api/v1/agents/{alice.id}/2fa/reset")
    assert reset.status == 200
    assert (await session.get("/api/v1/me")).status == 401  # her sessions ended
    entries = (await owner.get("/api/v1/audit")).json()["entries"]
    entry = next(e for e in entries if e["action"] == "agent.2fa_reset")
    assert entry["target"] == f"agent:{alice.id}"
    assert entry["actor"] == f"agent:{srv.acme.owner.id}"
    # The password alone logs her in again.
    assert "agent" in (await Http(srv.base_url).login(alice.username, alice.password)).json()


async def test_recovery_codes_can_be_renewed_and_two_factor_turned_off(srv: TestServer) -> None:
    alice = srv.acme.agents[0]
    session = await logged_in(srv, alice)
    _, old = await enroll(session)
    wrong = await session.post("/api/v1/me/2fa/recovery-codes", {"code": "999999"})
    assert (wrong.status, wrong.error_code) == (401, "bad_second_factor")
    renewed = await session.post("/api/v1/me/2fa/recovery-codes", {"code": old[0]})
    assert renewed.status == 200
    new = renewed.json()["recovery_codes"]
    assert not set(new) & set(old)
    again = await session.post("/api/v1/me/2fa/enroll")
    assert (again.status, again.error_code) == (409, "two_factor_enabled")
    off = await session.post("/api/v1/me/2fa/disable", {"code": new[0]})
    assert off.status == 200
    assert "agent" in (await Http(srv.base_url).login(alice.username, alice.password)).json()


async def test_the_cli_resets_two_factor_for_an_owner_locked_out(srv: TestServer) -> None:
    owner = srv.acme.owner
    session = await logged_in(srv, owner)
    await enroll(session)
    _, pending = await password_step(srv, owner)
    assert pending["second_factor"] == "totp"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "web.cli", "admin", *args]
        return subprocess.run(
            [*command, "--database-url", srv.database_url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = await trio.to_thread.run_sync(run, "reset-2fa", "--username", owner.username)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    assert (await session.get("/api/v1/me")).status == 401  # the sessions ended
    again = await Http(srv.base_url).login(owner.username, owner.password)
    assert again.status == 200 and "csrf_token" in again.json()
    entries = (await bearer(srv.base_url, owner.token).get("/api/v1/audit")).json()["entries"]
    assert any(e["action"] == "agent.2fa_reset" and e["actor"] == "cli" for e in entries)
    missing = await trio.to_thread.run_sync(run, "reset-2fa", "--username", "nobody")
    assert missing.returncode == 1 and "no account" in missing.stderr
