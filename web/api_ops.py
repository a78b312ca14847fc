"""Operators' view of the running server: the live supervision tree, and fault injection.

Both are for the server operator's owner (the role ``owner`` in the operator's workspace).
Fault injection crashes one running actor, or a service of the tree (storage, mail,
webhooks), as a bug would, to check on a staging server that it restarts (an actor from
storage, storage by reopening the database), that clients carry on, and that restarts reach
``/metrics`` and the alerts; it is refused (403 ``fault_injection_disabled``) unless the setting
``debug_fault_injection`` is on, which it is not by default. Every injection is audited.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from storage import Role
from web.errors import Forbidden, NotFound
from web.httpapi import ApiBlueprint, Call
from web.schemas_ops import FaultIn, FaultOut, SupervisionNode, SupervisionTree
from web.supervision import SERVICE_FAULTS, inject_service_fault

api = ApiBlueprint("api_ops", "ops")


def _flatten(node: Any, parent: str, depth: int) -> Iterator[SupervisionNode]:
    path = f"{parent}/{node.name}" if parent else node.name
    yield SupervisionNode(
        path=path,
        name=node.name,
        depth=depth,
        kind=node.kind,
        state=node.state,
        strategy=node.strategy,
        restart=node.restart,
        max_restarts=node.max_restarts,
        period_s=node.period_s,
        restarted=node.restarted,
        restarts=node.restarts,
        failures=node.failures,
        live=node.live,
        mailbox_depth=node.mailbox_depth,
        mailbox_depth_max=node.mailbox_depth_max,
    )
    for child in node.children:
        yield from _flatten(child, path, depth + 1)


@api.op(
    "GET",
    "/ops/supervision",
    summary="The live supervision tree: children, restarts, mailbox depths (server operators)",
    response=SupervisionTree,
    role=Role.OWNER,
    operator=True,
    description="Depth-first, parents first. A registry lists its busiest actors (queued "
    "messages) as children, not every key.",
)
async def supervision_tree(call: Call) -> SupervisionTree:
    tree = call.services.tree
    root = tree.snapshot() if tree is not None else call.services.engine.snapshot()
    return SupervisionTree(nodes=tuple(_flatten(root, "", 0)))


@api.op(
    "POST",
    "/ops/faults",
    summary="Crash one running actor or service on purpose (server operators; "
    "debug_fault_injection)",
    body=FaultIn,
    response=FaultOut,
    role=Role.OWNER,
    operator=True,
    description="Off unless the server runs with debug_fault_injection = true (403 "
    "fault_injection_disabled). 404 not_running when no such actor runs now.",
)
async def inject_fault(call: Call, body: FaultIn) -> FaultOut:
    services = call.services
    if not services.settings.server.debug_fault_injection:
        raise Forbidden(
            "fault injection is off (setting debug_fault_injection)",
            code="fault_injection_disabled",
        )
    if body.kind in SERVICE_FAULTS:
        return await _crash_service(call, body.kind)
    workspace_id = body.workspace_id or call.workspace_id
    if body.kind == "router":
        key = body.id or workspace_id
        workspace_id = key
    elif body.id is None:
        raise NotFound("id: required for this kind", code="not_running")
    else:
        key = body.id
    crashed = services.engine.inject_fault(body.kind, workspace_id, key)
    await services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="ops.fault_injected",
        target=f"{body.kind}:{workspace_id}/{key}",
        details={"crashed": crashed},
        ip=call.ip,
    )
    if not crashed:
        raise NotFound(f"no {body.kind} actor runs for this id now", code="not_running")
    return FaultOut(crashed=True, kind=body.kind, workspace_id=workspace_id, id=key)


async def _crash_service(call: Call, kind: str) -> FaultOut:
    services = call.services
    path = "/".join(("livechat", *SERVICE_FAULTS[kind]))
    # Audited before the crash: a crash of storage takes the backend away from this request.
    await services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="ops.fault_injected",
        target=f"service:{path}",
        details={},
        ip=call.ip,
    )
    if services.tree is None or not inject_service_fault(services.tree, kind):
        raise NotFound(f"the {kind} service does not run now", code="not_running")
    return FaultOut(crashed=True, kind=kind, workspace_id=None, id=path)
