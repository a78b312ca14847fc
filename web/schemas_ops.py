"""Bodies for server operators: the live supervision tree, fault injection and backups."""

from __future__ import annotations

from typing import Literal

import attrs

from web.wire import text


@attrs.frozen(kw_only=True)
class BackupOut:
    path: str
    rows: int


@attrs.frozen(kw_only=True)
class LastBackupOut:
    """The newest ``livechat backup`` that finished (None: never). ``age_s`` is what to alert on."""

    path: str | None = None
    size_bytes: int | None = None
    finished_at: float | None = None
    age_s: float | None = None


# ---------------------------------------------------------------- supervision (operators)

ActorKind = Literal["conversation", "visitor", "agent", "router"]
ServiceKind = Literal["storage", "mail", "webhooks"]


@attrs.frozen(kw_only=True)
class SupervisionNode:
    """One node of the live supervision tree, listed depth-first (a parent before its
    children); ``path`` names it from the root, e.g. ``livechat/engine/conversation``."""

    path: str
    name: str
    depth: int
    kind: Literal["supervisor", "registry", "service", "actor"]
    state: str
    strategy: str | None
    restart: str | None
    max_restarts: int | None
    period_s: float | None
    restarted: int
    restarts: int
    failures: int
    live: int | None
    mailbox_depth: int | None
    mailbox_depth_max: int | None


@attrs.frozen(kw_only=True)
class SupervisionTree:
    nodes: tuple[SupervisionNode, ...]


@attrs.frozen(kw_only=True)
class FaultIn:
    """Crash one running actor: a conversation, visitor or agent by its id (in ``workspace_id``,
    default yours), or a workspace's router (``id`` is then the workspace id, or omitted); or
    a service of the tree: ``storage`` (reopened), ``mail`` or ``webhooks`` (no ``id``)."""

    kind: ActorKind | ServiceKind
    id: str | None = attrs.field(default=None, **text(max_len=128))
    workspace_id: str | None = attrs.field(default=None, **text(max_len=128))


@attrs.frozen(kw_only=True)
class FaultOut:
    """For a service, ``id`` is its path in the tree (``livechat/storage``) and
    ``workspace_id`` is null."""

    crashed: bool
    kind: str
    workspace_id: str | None
    id: str
