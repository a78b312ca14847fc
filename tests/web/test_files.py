"""Files in chats: upload with the sender's credential, send by id, read by participants only."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

from tests.web.client import Http, HttpResponse, Peer, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server
from tests.web.test_ws_chat import agent_peer_login, start_agent

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


def files_dir(srv: TestServer) -> Path:
    return Path(srv.database_url[len("sqlite:///") :] + ".files")


async def upload_as_visitor(
    srv: TestServer, token: str | None, data: bytes, name: str = "shot.png", key: str | None = None
) -> HttpResponse:
    client = Http(srv.base_url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.request(
        "POST",
        f"/api/v1/widget/files?key={key or srv.acme.widget_key}&name={name}",
        raw=data,
        headers={**headers, "Content-Type": "image/png"},
    )


async def get_as_visitor(srv: TestServer, token: str | None, file_id: str) -> HttpResponse:
    client = Http(srv.base_url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.get(
        f"/api/v1/widget/files/{file_id}?key={srv.acme.widget_key}", headers=headers
    )


async def visitor_sends_file(
    srv: TestServer, vis: Peer, agent: Peer | None = None
) -> tuple[dict[str, Any], str, str]:
    hello = await visitor(srv, vis)
    token = hello["visitor_token"]
    up = await upload_as_visitor(srv, token, PNG)
    assert up.status == 201, up.body
    file_id = up.json()["id"]
    assert up.json()["type"] == "image/png" and up.json()["size"] == len(PNG)
    sent = await vis.request("send_message", client_msg_id="v-f1", text="", attachments=[file_id])
    assert sent["type"] == "result", sent
    return sent["result"], token, file_id


async def test_visitor_file_reaches_agent_and_strangers_get_404(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as other,
    ):
        await start_agent(agent)
        ack, token, file_id = await visitor_sends_file(srv, vis)
        conv_id = ack["conversation_id"]
        mine = await vis.push("event", id=None)
        while mine["event"]["kind"] != "message":
            mine = await vis.push("event")
        meta = {"id": file_id, "name": "shot.png", "type": "image/png", "size": len(PNG)}
        assert mine["event"]["data"]["attachments"] == [meta]  # the visitor sees its files

        await agent.push("chat_assigned")
        watched = await agent.request("watch", conversation_id=conv_id, after_seq=0)
        assert watched["type"] == "result", watched
        history = await agent.request("get_history", conversation_id=conv_id)
        messages = [e for e in history["result"]["events"] if e["kind"] == "message"]
        assert messages[0]["data"]["attachments"] == [meta]

        # The agent (cookie session) opens it: the bytes, as a download, never sniffed.
        got = await http.get(f"/api/v1/files/{file_id}")
        assert got.status == 200 and got.body == PNG
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]
        # The visitor reads its own file back.
        assert (await get_as_visitor(srv, token, file_id)).body == PNG

        # Strangers: another visitor, no credential, another workspace's agent, no session.
        other_token = (await visitor(srv, other))["visitor_token"]
        assert (await get_as_visitor(srv, other_token, file_id)).status == 404
        assert (await get_as_visitor(srv, None, file_id)).status == 404
        globex = bearer(srv.base_url, srv.globex.agents[0].token)
        assert (await globex.get(f"/api/v1/files/{file_id}")).status == 404
        assert (await Http(srv.base_url).get(f"/api/v1/files/{file_id}")).status == 401
        # Another visitor cannot send someone else's file either.
        stolen = await other.request(
            "send_message", client_msg_id="o-1", text="mine now", attachments=[file_id]
        )
        assert stolen["type"] == "error" and stolen["field"] == "attachments", stolen


async def test_agent_sends_file_visitor_opens_it_after_it_is_sent(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        hello = await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id="v-1", text="send me the invoice")
        conv_id = sent["result"]["conversation_id"]
        await agent.push("chat_assigned")
        pdf = b"%PDF-1.4\n% invoice\n"
        up = await http.request(
            "POST", f"/api/v1/conversations/{conv_id}/files?name=invoice.pdf", raw=pdf
        )
        assert up.status == 201, up.body
        file_id = up.json()["id"]
        token = hello["visitor_token"]
        assert (await get_as_visitor(srv, token, file_id)).status == 404  # not sent yet
        # Another workspace's agent cannot upload into this chat, nor is it told it exists.
        globex = bearer(srv.base_url, srv.globex.agents[0].token)
        foreign = await globex.request(
            "POST", f"/api/v1/conversations/{conv_id}/files?name=x.pdf", raw=pdf
        )
        assert foreign.status == 404
        reply = await agent.request(
            "send_message",
            conversation_id=conv_id,
            client_msg_id="a-1",
            text="here it is",
            attachments=[file_id],
        )
        assert reply["type"] == "result", reply
        got = await get_as_visitor(srv, token, file_id)
        assert got.status == 200 and got.body == pdf
        assert got.headers["content-type"] == "application/pdf"


async def test_type_is_judged_by_content_and_limits_hold(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, files_max_bytes=1000) as srv:
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            token = (await visitor(srv, vis))["visitor_token"]
            html = b"<html><script>alert(1)</script></html>"
            refused = await upload_as_visitor(srv, token, html, name="cat.png")
            assert refused.status == 415 and refused.error_code == "file_type_refused"
            svg = b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'
            assert (await upload_as_visitor(srv, token, svg, name="a.svg")).status == 415
            big = await upload_as_visitor(srv, token, PNG + b"\0" * 1000)
            assert big.status == 413 and big.error_code == "file_too_large"
            assert (await upload_as_visitor(srv, None, PNG)).status == 401
            # The workspace quota: an admin lowers it, the next upload is refused.
            owner = bearer(srv.base_url, srv.acme.owner.token)
            put = await owner.request(
                "PUT",
                "/api/v1/settings/files",
                {
                    "max_file_bytes": 1000,
                    "max_storage_bytes": len(PNG) + 10,
                    "allowed_types": ["image/png"],
                },
            )
            assert put.status == 200, put.body
            assert (await upload_as_visitor(srv, token, PNG)).status == 201
            usage = (await owner.get("/api/v1/settings/files/usage")).json()
            assert usage == {"used_bytes": len(PNG), "max_storage_bytes": len(PNG) + 10}
            full = await upload_as_visitor(srv, token, PNG)
            assert full.status == 413 and full.error_code == "quota_exceeded"
            pdf = await upload_as_visitor(srv, token, b"%PDF-1.4\n", name="x.pdf")
            assert pdf.status == 415  # no longer in this workspace's allow-list
        # Only the accepted file's bytes are on disk, private.
        stored = [p for p in files_dir(srv).iterdir()]
        assert len(stored) == 1
        assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(files_dir(srv).stat().st_mode) == 0o700


async def test_erasure_and_workspace_purge_delete_the_bytes(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        ack, _token, file_id = await visitor_sends_file(srv, vis)
    assert (files_dir(srv) / file_id).exists()
    visitor_id = (
        await srv.services.storage.get_conversation(  # type: ignore[union-attr]
            srv.acme.id, ack["conversation_id"]
        )
    ).visitor_id
    storage = srv.services.storage  # type: ignore[union-attr]
    await storage.erase_visitor(srv.acme.id, visitor_id)
    assert not (files_dir(srv) / file_id).exists()
    assert await storage.get_attachment(srv.acme.id, file_id) is None

    async with open_peer(
        srv.visitor_ws_url(srv.globex.widget_key), origin=srv.globex.site_origin
    ) as vis2:
        token = (await visitor(srv, vis2))["visitor_token"]
        up = await upload_as_visitor(srv, token, PNG, key=srv.globex.widget_key)
        assert up.status == 201
    second = up.json()["id"]
    assert (files_dir(srv) / second).exists()
    assert await storage.attachment_usage(srv.globex.id) == len(PNG)
    await storage.purge_workspace(srv.globex.id)
    assert not (files_dir(srv) / second).exists()
    assert os.listdir(files_dir(srv)) == []


async def test_an_upload_never_sent_is_swept_and_uploads_are_rate_limited(
    tmp_path: Path,
) -> None:
    from web.housekeeping import housekeeping_pass

    async with run_test_server(tmp_path, files_uploads_per_10min=2) as srv:
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            token = (await visitor(srv, vis))["visitor_token"]
            first = await upload_as_visitor(srv, token, PNG)
            assert (await upload_as_visitor(srv, token, PNG)).status == 201
            limited = await upload_as_visitor(srv, token, PNG)
            assert limited.status == 429 and "retry-after" in limited.headers
        file_id = first.json()["id"]
        storage = srv.services.storage  # type: ignore[union-attr]
        done = await housekeeping_pass(storage, unsent_files_ttl_s=0.0)
        assert done["unsent_files"] == 2
        assert not (files_dir(srv) / file_id).exists()
        assert (await get_as_visitor(srv, token, file_id)).status == 404


async def test_a_refused_upload_before_its_body_is_read_does_not_hang_the_client(
    srv: TestServer,
) -> None:
    """Unknown key, no token: refused before reading a byte; the answer still comes, and
    the next request (a new connection) works."""
    big = PNG + b"\0" * 200_000
    refused = await upload_as_visitor(srv, None, big, key="no-such-key")
    assert refused.status == 404 and refused.error_code == "unknown_widget_key"
    assert refused.headers.get("connection") == "close"
    assert (await upload_as_visitor(srv, None, big)).status == 401
    assert (await Http(srv.base_url).get("/healthz")).status == 200


async def test_visitor_export_carries_its_files_and_only_what_it_saw(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        ack, _token, sent_id = await visitor_sends_file(srv, vis)
        conv_id = ack["conversation_id"]
        await agent.push("chat_assigned")
        draft = await http.request(
            "POST", f"/api/v1/conversations/{conv_id}/files?name=draft.pdf", raw=b"%PDF-1.4\n"
        )
        draft_id = draft.json()["id"]
        # A supervisor-less agent outside the chat may not attach its files to it.
        bob = Http(srv.base_url)
        await bob.login(srv.acme.agents[1].username, srv.acme.agents[1].password)
        async with open_peer(srv.agent_ws_url, cookie=bob.cookie) as outsider:
            await start_agent(outsider)
            up = await bob.request(
                "POST", f"/api/v1/conversations/{conv_id}/files?name=x.pdf", raw=b"%PDF-1.4\n"
            )
            bobs_id = up.json()["id"]
            refused = await outsider.request(
                "send_message",
                conversation_id=conv_id,
                client_msg_id="b-1",
                text="",
                attachments=[bobs_id],
            )
            assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    visitor_id = (
        await srv.services.storage.get_conversation(  # type: ignore[union-attr]
            srv.acme.id, conv_id
        )
    ).visitor_id
    owner = bearer(srv.base_url, srv.acme.owner.token)
    export = await owner.get(f"/api/v1/export?visitor_id={visitor_id}&internal=exclude")
    lines = [json.loads(line) for line in export.body.decode().splitlines()]
    files = [line["file"]["id"] for line in lines if "file" in line]
    rows = [line["row"]["id"] for line in lines if line.get("table") == "attachments"]
    assert files == [sent_id] and rows == [sent_id]  # not the agent's file never sent
    assert lines[-1]["files"] == 1
    assert base64.b64decode(next(x["file"]["data"] for x in lines if "file" in x)) == PNG
    marked = await owner.get(f"/api/v1/export?visitor_id={visitor_id}")
    internal = {
        line["row"]["id"]: line["internal"]
        for line in (json.loads(x) for x in marked.body.decode().splitlines())
        if line.get("table") == "attachments"
    }
    assert internal == {sent_id: False, draft_id: True, bobs_id: True}
