"""What agents pick from: groups (departments) and canned responses."""

from __future__ import annotations

from typing import Any

from storage import Conflict as StorageConflict
from storage import Role
from web.api_admin import attrs_dict, audit, workspace_changed
from web.errors import BadRequest, Conflict, NotFound
from web.httpapi import ApiBlueprint, Call
from web.schemas import Done
from web.schemas_admin import (
    CannedIn,
    CannedList,
    CannedOut,
    CannedPatchIn,
    GroupIn,
    GroupList,
    GroupOut,
    GroupPatchIn,
)

api = ApiBlueprint("api_catalogue", "admin")


# ---------------------------------------------------------------- groups


def _group_out(g: Any) -> GroupOut:
    return GroupOut(id=g.id, name=g.name, fallback_group_id=g.fallback_group_id, public=g.public)


@api.op("GET", "/groups", summary="Agent groups (departments)", response=GroupList)
async def list_groups(call: Call) -> GroupList:
    groups = await call.services.storage.list_groups(call.workspace_id)
    return GroupList(groups=tuple(_group_out(g) for g in groups))


async def _check_fallback(call: Call, fallback: str | None, own_id: str | None = None) -> None:
    if fallback is None:
        return
    if (
        fallback == own_id
        or await call.services.storage.get_group(call.workspace_id, fallback) is None
    ):
        raise BadRequest("no such group", code="invalid_value", field="$.fallback_group_id")


@api.op(
    "POST",
    "/groups",
    summary="Create a group",
    body=GroupIn,
    response=GroupOut,
    status=201,
    role=Role.ADMIN,
)
async def create_group(call: Call, body: GroupIn) -> GroupOut:
    await _check_fallback(call, body.fallback_group_id)
    group = await call.services.storage.create_group(
        call.workspace_id,
        name=body.name,
        fallback_group_id=body.fallback_group_id,
        public=body.public,
    )
    await workspace_changed(call)
    await audit(call, "group.created", f"group:{group.id}")
    return _group_out(group)


@api.op(
    "PATCH",
    "/groups/{group_id}",
    summary="Rename a group or set its fallback",
    body=GroupPatchIn,
    response=GroupOut,
    role=Role.ADMIN,
)
async def update_group(call: Call, group_id: str, body: GroupPatchIn) -> GroupOut:
    if await call.services.storage.get_group(call.workspace_id, group_id) is None:
        raise NotFound()
    await _check_fallback(call, body.fallback_group_id, group_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    group = await call.services.storage.update_group(call.workspace_id, group_id, **changes)
    await workspace_changed(call)
    await audit(call, "group.updated", f"group:{group_id}")
    return _group_out(group)


@api.op("DELETE", "/groups/{group_id}", summary="Delete a group", response=Done, role=Role.ADMIN)
async def delete_group(call: Call, group_id: str) -> Done:
    if await call.services.storage.get_group(call.workspace_id, group_id) is None:
        raise NotFound()
    await call.services.storage.delete_group(call.workspace_id, group_id)
    await workspace_changed(call)
    await audit(call, "group.deleted", f"group:{group_id}")
    return Done()


# ---------------------------------------------------------------- canned responses


def _canned_out(c: Any) -> CannedOut:
    return CannedOut(id=c.id, shortcut=c.shortcut, text=c.text)


@api.op("GET", "/canned-responses", summary="Canned responses", response=CannedList)
async def list_canned(call: Call) -> CannedList:
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    return CannedList(canned_responses=tuple(_canned_out(c) for c in items))


@api.op(
    "POST",
    "/canned-responses",
    summary="Create a canned response",
    body=CannedIn,
    response=CannedOut,
    status=201,
    role=Role.SUPERVISOR,
)
async def create_canned(call: Call, body: CannedIn) -> CannedOut:
    await _shortcut_free(call, body.shortcut, None)
    try:
        canned = await call.services.storage.create_canned_response(
            call.workspace_id, shortcut=body.shortcut, text=body.text
        )
    except StorageConflict:
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut") from None
    await audit(call, "canned.created", f"canned:{canned.id}", shortcut=canned.shortcut)
    return _canned_out(canned)


async def _shortcut_free(call: Call, shortcut: str, own_id: str | None) -> None:
    """Shortcuts are unique per workspace, ignoring case (``/Refund`` and ``/refund`` would
    both match what an agent types)."""
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    if any(c.shortcut.lower() == shortcut.lower() and c.id != own_id for c in items):
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut")


async def _canned_exists(call: Call, canned_id: str) -> None:
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    if not any(c.id == canned_id for c in items):
        raise NotFound()


@api.op(
    "PATCH",
    "/canned-responses/{canned_id}",
    summary="Edit a canned response",
    body=CannedPatchIn,
    response=CannedOut,
    role=Role.SUPERVISOR,
)
async def update_canned(call: Call, canned_id: str, body: CannedPatchIn) -> CannedOut:
    await _canned_exists(call, canned_id)
    if body.shortcut is not None:
        await _shortcut_free(call, body.shortcut, canned_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    try:
        canned = await call.services.storage.update_canned_response(
            call.workspace_id, canned_id, **changes
        )
    except StorageConflict:
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut") from None
    await audit(call, "canned.updated", f"canned:{canned_id}", fields=sorted(changes))
    return _canned_out(canned)


@api.op(
    "DELETE",
    "/canned-responses/{canned_id}",
    summary="Delete a canned response",
    response=Done,
    role=Role.SUPERVISOR,
)
async def delete_canned(call: Call, canned_id: str) -> Done:
    await _canned_exists(call, canned_id)
    await call.services.storage.delete_canned_response(call.workspace_id, canned_id)
    await audit(call, "canned.deleted", f"canned:{canned_id}")
    return Done()
