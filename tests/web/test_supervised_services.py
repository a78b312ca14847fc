"""Storage, mail and webhooks are children of the supervision tree: crash each through the real
server (the operators' fault injection) and watch it restart while chats carry on.

Storage is reopened behind the handle everyone holds, and the root (rest_for_one) restarts the
engine, housekeeping and delivery after it; mail and webhooks restart alone under ``delivery``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from engine import Supervisor
from tests.pg import pg_schema_url
from tests.web.client import bearer
from tests.web.receiver import run_receiver
from tests.web.server import TestServer, run_test_server
from tests.web.test_supervision_tree import _both_carry_on, _chat, _crash, _metrics, _node
from tests.web.test_webhooks import FAST, next_of_type, subscribe, visitor_says

RESTART_WAIT_S = 20.0


def _service_restarts(text: str, path: str) -> int:
    match = re.search(
        rf'^livechat_service_restarts_total{{kind="{re.escape(path)}"}} (\d+)$', text, re.M
    )
    return int(match.group(1)) if match else 0


def _tree(srv: TestServer) -> Supervisor:
    assert srv.services is not None and srv.services.tree is not None
    return srv.services.tree


def _delivery(srv: TestServer) -> Supervisor:
    delivery = _tree(srv).service("delivery")
    assert isinstance(delivery, Supervisor)
    return delivery


async def test_the_tree_shows_storage_mail_and_webhooks_as_children(srv: TestServer) -> None:
    resp = await bearer(srv.base_url, srv.acme.owner.token).get("/api/v1/ops/supervision")
    nodes = {n["path"]: n for n in resp.json()["nodes"]}
    assert [p for p in nodes if p.count("/") <= 1] == [
        "livechat",
        "livechat/storage",
        "livechat/engine",
        "livechat/housekeeping",
        "livechat/delivery",
    ]
    storage = nodes["livechat/storage"]
    assert (storage["kind"], storage["restart"], storage["state"]) == (
        "service",
        "permanent",
        "ready",
    )
    delivery = nodes["livechat/delivery"]
    assert (delivery["kind"], delivery["strategy"], delivery["max_restarts"]) == (
        "supervisor",
        "one_for_one",
        3,
    )
    for name in ("mail", "webhooks"):
        node = nodes[f"livechat/delivery/{name}"]
        assert (node["kind"], node["state"], node["restart"]) == ("service", "running", "permanent")


@contextmanager
def _database(backend: str) -> Iterator[dict[str, Any]]:
    """Settings naming the database: the test server's SQLite file, or a fresh PostgreSQL
    schema (the backend is opened in the storage child's task and used from every other)."""
    if backend == "sqlite":
        yield {}
    else:
        with pg_schema_url() as url:
            yield {"database_url": url}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_a_crashed_storage_is_reopened_and_the_engine_restarted_after_it(
    tmp_path: Path, backend: str
) -> None:
    with _database(backend) as database:
        await _storage_crash(tmp_path, database)


async def _storage_crash(tmp_path: Path, database: dict[str, Any]) -> None:
    async with (
        run_test_server(tmp_path, debug_fault_injection=True, **database) as srv,
        _chat(srv) as (agent, vis, conv_id),
    ):
        assert srv.services is not None
        handle: Any = srv.services.storage
        assert handle.generation == 1
        await _crash(srv, "storage")
        with trio.fail_after(RESTART_WAIT_S):
            await _tree(srv).wait_restarts(1)
        assert handle.generation == 2  # a new backend behind the same handle
        # Both clients carry on over their sockets, with the chat read back from storage.
        await _both_carry_on(agent, vis, conv_id, "after-reopen")
        history = await srv.services.storage.history(srv.acme.id, conv_id)
        bodies = [e.body for e in history if e.kind == "message"]
        assert bodies == ["hello", "visitor after-reopen", "agent after-reopen"]
        # rest_for_one: storage crashed; the engine, housekeeping and delivery were restarted
        # after it, once each; the root counts one restart.
        assert (await _node(srv, "livechat"))["restarts"] == 1
        for child in ("storage", "engine", "housekeeping", "delivery"):
            assert (await _node(srv, f"livechat/{child}"))["restarted"] == 1, child
        assert (await _node(srv, "livechat/storage"))["state"] == "ready"
        text = await _metrics(srv)
        assert _service_restarts(text, "livechat/storage") == 1
        ready = await bearer(srv.base_url, srv.acme.owner.token).get("/readyz")
        assert ready.status == 200, ready.body


async def test_a_crashed_mail_service_restarts_alone_and_chats_are_not_disturbed(
    tmp_path: Path,
) -> None:
    async with (
        run_test_server(tmp_path, debug_fault_injection=True) as srv,
        _chat(srv) as (agent, vis, conv_id),
    ):
        assert srv.services is not None
        await _crash(srv, "mail")
        with trio.fail_after(RESTART_WAIT_S):
            await _delivery(srv).wait_restarts(1)
            await srv.services.mailer.next_round()  # the restarted service runs its rounds
        await _both_carry_on(agent, vis, conv_id, "after-mail-crash")
        assert (await _node(srv, "livechat/delivery/mail"))["restarted"] == 1
        assert (await _node(srv, "livechat/delivery/webhooks"))["restarted"] == 0
        assert (await _node(srv, "livechat/delivery"))["restarts"] == 1
        assert (await _node(srv, "livechat"))["restarts"] == 0
        assert (await _node(srv, "livechat/engine"))["restarted"] == 0
        assert (await _node(srv, "livechat/storage"))["restarted"] == 0
        text = await _metrics(srv)
        assert _service_restarts(text, "delivery/mail") == 1
        assert _service_restarts(text, "livechat/storage") == 0


async def test_a_crashed_webhook_service_restarts_and_still_delivers(tmp_path: Path) -> None:
    async with (
        run_receiver() as receiver,
        run_test_server(tmp_path, debug_fault_injection=True, **FAST) as srv,
    ):
        await subscribe(srv, receiver.url, ["message.created"])
        await _crash(srv, "webhooks")
        with trio.fail_after(RESTART_WAIT_S):
            await _delivery(srv).wait_restarts(1)
        await visitor_says(srv, "after the webhooks crash")
        got = await next_of_type(receiver, "message.created")
        assert b"after the webhooks crash" in got.body
        assert (await _node(srv, "livechat/delivery/webhooks"))["restarted"] == 1
        assert (await _node(srv, "livechat/delivery/mail"))["restarted"] == 0
        assert (await _node(srv, "livechat"))["restarts"] == 0
        assert _service_restarts(await _metrics(srv), "delivery/webhooks") == 1


async def test_service_faults_are_refused_unless_the_operator_turned_them_on(
    srv: TestServer,
) -> None:
    for kind in ("storage", "mail", "webhooks"):
        resp = await bearer(srv.base_url, srv.acme.owner.token).post(
            "/api/v1/ops/faults", {"kind": kind}
        )
        assert resp.status == 403 and resp.error_code == "fault_injection_disabled"
