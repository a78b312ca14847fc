"""Every operation of /openapi.json, tried with a token of each scope and a session of each role.

``ACCESS`` below is the contract: the lowest role, whether only server operators may call it,
and the token scopes that allow it. The same table is in docs/admin-api.md ("Who may call
what") and, per operation, in the OpenAPI document (``x-livechat-access``); this test checks the
three agree and that the server behaves as they say. A new operation fails the test until it
is added here and in the docs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from tests.web.client import Http, bearer
from tests.web.server import TestServer
from web.auth import hash_secret, new_secret

# method path                                      role        operator  token scopes
ACCESS_TABLE = """
POST   /auth/login                                   public      -   -
POST   /auth/logout                                  agent       -   admin
POST   /auth/password                                agent       -   admin
GET    /me                                           agent       -   admin,read
GET    /workspaces                                   agent       -   admin,read
POST   /workspaces                                   owner       yes admin
GET    /workspaces/{workspace_id}                    agent       -   admin,read
PATCH  /workspaces/{workspace_id}                    admin       -   admin
PUT    /workspaces/{workspace_id}/limits             owner       yes admin
POST   /workspaces/{workspace_id}/suspend            owner       yes admin
POST   /workspaces/{workspace_id}/resume             owner       yes admin
POST   /workspaces/{workspace_id}/terminate          owner       yes admin
GET    /agents                                       agent       -   admin,read
POST   /agents                                       admin       -   admin
GET    /agents/{agent_id}                            agent       -   admin,read
PATCH  /agents/{agent_id}                            admin       -   admin
POST   /agents/{agent_id}/reset-password             admin       -   admin
GET    /groups                                       agent       -   admin,read
POST   /groups                                       admin       -   admin
PATCH  /groups/{group_id}                            admin       -   admin
DELETE /groups/{group_id}                            admin       -   admin
GET    /canned-responses                             agent       -   admin,read
POST   /canned-responses                             supervisor  -   admin
PATCH  /canned-responses/{canned_id}                 supervisor  -   admin
DELETE /canned-responses/{canned_id}                 supervisor  -   admin
GET    /settings/widget                              agent       -   admin,read
PUT    /settings/widget                              admin       -   admin
PATCH  /settings/widget                              admin       -   admin
GET    /settings/routing                             agent       -   admin,read
PUT    /settings/routing                             admin       -   admin
GET    /settings/hours                               agent       -   admin,read
PUT    /settings/hours                               admin       -   admin
GET    /triggers                                     agent       -   admin,read
PUT    /triggers                                     admin       -   admin
GET    /settings/identity-secret                     admin       -   admin
GET    /tags                                         agent       -   admin,read
PUT    /tags                                         supervisor  -   admin
GET    /tokens                                       admin       -   admin,read
POST   /tokens                                       admin       -   admin
DELETE /tokens/{token_id}                            admin       -   admin
GET    /audit                                        admin       -   admin,read
GET    /audit/server                                 owner       yes admin,read
GET    /conversations                                agent       -   admin,read
GET    /conversations/search                         agent       -   admin,read
GET    /conversations/{conversation_id}              agent       -   admin,read
GET    /conversations/{conversation_id}/transcript   agent       -   admin,read
POST   /conversations/{conversation_id}/close        agent       -   admin
POST   /conversations/{conversation_id}/transfer     agent       -   admin
POST   /conversations/{conversation_id}/tags         agent       -   admin
GET    /visitors/live                                agent       -   admin,read
GET    /visitors/{visitor_id}                        agent       -   admin,read
POST   /visitors/{visitor_id}/ban                    supervisor  -   admin
DELETE /visitors/{visitor_id}                        admin       -   admin
GET    /bans                                         supervisor  -   admin,read
DELETE /bans/{ban_id}                                supervisor  -   admin
GET    /reports                                      supervisor  -   admin,read
GET    /reports/csv                                  supervisor  -   admin,read
GET    /routing-decisions                            supervisor  -   admin,read
GET    /export                                       admin       -   admin,export
POST   /backups                                      owner       -   admin
GET    /backups/last                                 owner       yes admin,read
GET    /widget/config                                public      -   -
POST   /auth/login/2fa                               public      -   -
POST   /auth/2fa/enroll                              public      -   -
POST   /auth/2fa/enroll/confirm                      public      -   -
GET    /me/2fa                                       agent       -   admin,read
POST   /me/2fa/enroll                                agent       -   -
POST   /me/2fa/confirm                               agent       -   -
POST   /me/2fa/recovery-codes                        agent       -   -
POST   /me/2fa/disable                               agent       -   -
POST   /agents/{agent_id}/2fa/reset                  admin       -   admin
GET    /settings/security                            admin       -   admin,read
PUT    /settings/security                            admin       -   admin
GET    /settings/sso                                 admin       -   admin,read
PUT    /settings/sso                                 admin       -   admin
DELETE /settings/sso                                 admin       -   admin
GET    /auth/sso/{slug}/start                        public      -   -
GET    /auth/sso/callback                            public      -   -
GET    /settings/notifications                       admin       -   admin,read
PUT    /settings/notifications                       admin       -   admin
GET    /mail/log                                     admin       -   admin,read
GET    /inbox                                        agent       -   admin,read
GET    /inbox/count                                  agent       -   admin,read
POST   /inbox/{conversation_id}/assign               agent       -   admin
POST   /inbox/{conversation_id}/done                 agent       -   admin
POST   /inbox/{conversation_id}/reopen               agent       -   admin
POST   /inbox/{conversation_id}/reply                agent       -   admin
POST   /auth/forgot-password                         public      -   -
POST   /auth/reset-password                          public      -   -
POST   /widget/transcript                            public      -   -
POST   /conversations/{conversation_id}/files        agent       -   admin,agent
GET    /files/{file_id}                              agent       -   admin,read
GET    /settings/files                               agent       -   admin,read
PUT    /settings/files                               admin       -   admin
GET    /settings/files/usage                         agent       -   admin,read
POST   /widget/files                                 public      -   -
GET    /widget/files/{file_id}                       public      -   -
GET    /webhooks                                     admin       -   admin,read
POST   /webhooks                                     admin       -   admin
GET    /webhooks/{webhook_id}                        admin       -   admin,read
PATCH  /webhooks/{webhook_id}                        admin       -   admin
DELETE /webhooks/{webhook_id}                        admin       -   admin
POST   /webhooks/{webhook_id}/rotate-secret          admin       -   admin
GET    /webhooks/{webhook_id}/deliveries             admin       -   admin,read
GET    /webhooks/{webhook_id}/deliveries/{delivery_id} admin       -   admin,read
POST   /webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver admin       -   admin
GET    /ops/supervision                              owner       yes admin,read
POST   /ops/faults                                   owner       yes admin
"""

SCOPES = ("admin", "read", "export", "agent")
RANK = {"agent": 0, "supervisor": 1, "admin": 2, "owner": 3}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "admin-api.md"


@attrs.frozen
class Access:
    role: str  # "public": no authentication
    operator: bool
    scopes: frozenset[str]


def _table() -> dict[tuple[str, str], Access]:
    table = {}
    for line in ACCESS_TABLE.strip().splitlines():
        method, path, role, operator, scopes = line.split()
        table[(method, path)] = Access(
            role, operator == "yes", frozenset() if scopes == "-" else frozenset(scopes.split(","))
        )
    return table


ACCESS = _table()


@attrs.frozen
class Credential:
    name: str
    client: Http
    role: str
    operator: bool
    scopes: frozenset[str] | None  # None: a session

    def may(self, access: Access) -> bool:
        if RANK[self.role] < RANK[access.role] or (access.operator and not self.operator):
            return False
        return self.scopes is None or bool(self.scopes & access.scopes)


def test_docs_table_matches_the_test_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Who may call what", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+) ([^`]+)` \| (\w+) \| (yes|) \| ([^|]*) \|$", section, re.M)
    documented = {
        (method, path): Access(
            role,
            operator == "yes",
            frozenset(s.strip(" `") for s in scopes.split(",") if s.strip(" `-")),
        )
        for method, path, role, operator, scopes in rows
    }
    assert documented == ACCESS


def _fill(path: str) -> str:
    return "/api/v1" + re.sub(r"\{[^}]+\}", "no-such-id", path)


async def _credentials(srv: TestServer) -> list[Credential]:
    assert srv.services is not None and srv.acme.supervisor is not None
    storage = srv.services.storage
    creds = []
    owner_token = bearer(srv.base_url, srv.acme.owner.token)
    made = await owner_token.post(
        "/api/v1/agents", {"username": "adam", "display_name": "Adam", "role": "admin"}
    )
    assert made.status == 201, made.body
    accounts = [
        ("owner", srv.acme.owner.username, srv.acme.owner.password, True),
        ("admin", "adam", made.json()["password"], True),
        ("supervisor", srv.acme.supervisor.username, srv.acme.supervisor.password, True),
        ("agent", srv.acme.agents[0].username, srv.acme.agents[0].password, True),
        ("owner", srv.globex.owner.username, srv.globex.owner.password, False),
    ]
    for role, username, password, operator in accounts:
        client = Http(srv.base_url)
        assert (await client.login(username, password)).status == 200
        name = f"session {role}{'' if operator else ' (not operator)'}"
        creds.append(Credential(name, client, role, operator, None))
    for scope in SCOPES:
        secret = "lct_" + new_secret()
        await storage.create_api_token(
            srv.acme.id,
            agent_id=srv.acme.owner.id,
            name=f"scope {scope}",
            token_hash=hash_secret(secret),
            scopes=(scope,),
        )
        creds.append(
            Credential(
                f"owner token {scope}",
                bearer(srv.base_url, secret),
                "owner",
                True,
                frozenset({scope}),
            )
        )
    # Role limits a token too: an agent's admin-scope token is still an agent.
    creds.append(
        Credential(
            "agent token admin",
            bearer(srv.base_url, srv.acme.agents[0].token),
            "agent",
            True,
            frozenset({"admin"}),
        )
    )
    return creds


async def test_every_operation_answers_each_scope_and_role_as_the_table_says(
    srv: TestServer,
) -> None:
    doc = (await Http(srv.base_url).get("/openapi.json")).json()
    operations: dict[tuple[str, str], dict[str, Any]] = {
        (method.upper(), path.removeprefix("/api/v1")): item
        for path, items in doc["paths"].items()
        if path.startswith("/api/v1/")
        for method, item in items.items()
    }
    assert set(operations) == set(ACCESS), "operations and the ACCESS table differ"
    for key, item in operations.items():
        access = ACCESS[key]
        declared = item.get("x-livechat-access")
        if access.role == "public":
            assert declared is None and item["security"] == [], key
            continue
        assert declared == {
            "role": access.role,
            "operator": access.operator,
            "token_scopes": sorted(access.scopes, key=("admin", "read", "export", "agent").index),
        }, key

    creds = await _credentials(srv)
    anonymous = Http(srv.base_url)
    mismatches = []
    # Logout last: it ends the session that the other calls use.
    order = sorted(ACCESS, key=lambda k: k == ("POST", "/auth/logout"))
    for method, path in order:
        access = ACCESS[(method, path)]
        body = {} if method in ("POST", "PUT", "PATCH") else None
        url = _fill(path)
        if access.role == "public":
            resp = await anonymous.request(method, url, body)
            if resp.status in (401, 403):
                mismatches.append(f"{method} {path} anonymous: {resp.status}")
            continue
        resp = await anonymous.request(method, url, body)
        if (resp.status, resp.error_code) != (401, "unauthenticated"):
            mismatches.append(f"{method} {path} anonymous: {resp.status} {resp.error_code}")
        for cred in creds:
            resp = await cred.client.request(method, url, body)
            expected = cred.may(access)
            if expected and resp.status in (401, 403):
                mismatches.append(
                    f"{method} {path} {cred.name}: refused {resp.status} {resp.error_code}"
                )
            if not expected:
                role_ok = RANK[cred.role] >= RANK[access.role] and (
                    cred.operator or not access.operator
                )
                code = "scope_denied" if role_ok else "forbidden"
                if (resp.status, resp.error_code) != (403, code):
                    mismatches.append(
                        f"{method} {path} {cred.name}: {resp.status} {resp.error_code},"
                        f" expected 403 {code}"
                    )
    assert not mismatches, "\n".join(mismatches)


async def test_a_read_token_cannot_read_the_identity_secret(srv: TestServer) -> None:
    """The identity secret signs visitor identities: reading it is a credential, not a read."""
    assert srv.services is not None
    secret = "lct_" + new_secret()
    await srv.services.storage.create_api_token(
        srv.acme.id,
        agent_id=srv.acme.owner.id,
        name="dashboard",
        token_hash=hash_secret(secret),
        scopes=("read",),
    )
    reader = bearer(srv.base_url, secret)
    assert (await reader.get("/api/v1/settings/widget")).status == 200
    resp = await reader.get("/api/v1/settings/identity-secret")
    assert (resp.status, resp.error_code) == (403, "scope_denied")
    assert srv.acme.identity_secret not in resp.body.decode()
