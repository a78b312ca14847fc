"""Terminated workspaces are purged after their grace period; retention is applied."""

from __future__ import annotations

import time

from tests.web.client import bearer
from tests.web.server import TestServer
from web.housekeeping import housekeeping_pass


async def test_terminated_workspace_is_purged_only_after_the_grace_period(
    srv: TestServer,
) -> None:
    assert srv.services is not None
    storage = srv.services.storage
    operator = bearer(srv.base_url, srv.acme.owner.token)
    resp = await operator.post(f"/api/v1/workspaces/{srv.globex.id}/terminate", {"grace_days": 1})
    assert resp.status == 200
    assert (await housekeeping_pass(storage))["purged_workspaces"] == 0
    assert await storage.get_workspace(srv.globex.id) is not None
    later = time.time() + 2 * 86400
    assert (await housekeeping_pass(storage, now=later))["purged_workspaces"] == 1
    assert await storage.get_workspace(srv.globex.id) is None
    assert await storage.get_workspace(srv.acme.id) is not None
