"""Who a visitor is: the device token it holds, or an identity its site signed.

A visitor's first frame may carry the token this device was given before and, for a user
logged in on the site, ``identity``: the site's user id with its signature, hex
HMAC-SHA256(workspace identity secret, user id). A signature that does not verify raises
``InvalidIdentity`` and nothing is created. A verified identity finds the visitor known under
that user id (any device), or adopts the anonymous visitor of this device, or creates one; a
visitor found by identity gets a new token for this device. Tokens are stored hashed (sha256),
so a leaked table does not open anyone's chats.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import attrs

from engine.errors import InvalidIdentity
from storage import Storage, Visitor, Workspace

__all__ = ["IdentifiedVisitor", "VisitorIdentity", "identify_visitor"]

MAX_USER_ID_CHARS = 256
TOKEN_PREFIX = "lcv_"


@attrs.frozen(kw_only=True)
class VisitorIdentity:
    """A site's claim that this visitor is its user ``user_id``, signed with the secret."""

    user_id: str
    signature: str  # hex HMAC-SHA256(identity secret, user_id), any case


@attrs.frozen(kw_only=True)
class IdentifiedVisitor:
    visitor: Visitor
    token: str  # the visitor's token on this device: the one presented, or a new one
    identified: bool  # identified on this device now (not a tab already holding its token)
    first_time: bool  # no visitor had this identity before
    created: bool  # a new visitor row, written now (nothing can refer to it yet: no ban)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _verifies(workspace: Workspace, identity: VisitorIdentity) -> bool:
    expected = hmac.new(
        workspace.identity_secret.encode(), identity.user_id.encode(), hashlib.sha256
    ).hexdigest()
    return len(identity.user_id) <= MAX_USER_ID_CHARS and hmac.compare_digest(
        expected, identity.signature.lower()
    )


async def identify_visitor(
    storage: Storage,
    workspace: Workspace,
    *,
    token: str | None,
    identity: VisitorIdentity | None,
    user_agent: str | None,
    ip: str | None,
) -> IdentifiedVisitor:
    """The visitor behind a first frame, created if new. ``InvalidIdentity`` if ``identity``
    does not verify; storage errors propagate (the caller's deadline bounds the calls)."""
    ws_id = workspace.id
    visitor: Visitor | None = None
    kept: str | None = None
    identified = first_time = False
    if token:
        visitor = await storage.find_visitor_by_token_hash(ws_id, _hash(token))
        if visitor is not None:
            kept = token
    if identity is not None:
        if not _verifies(workspace, identity):
            raise InvalidIdentity(
                "the identity signature does not verify", field="identity.signature"
            )
        known = await storage.find_visitor_by_external_id(ws_id, identity.user_id)
        identified = visitor is None or visitor.external_id != identity.user_id
        first_time = known is None
        if known is not None:
            visitor = known
            kept = None  # mint one for this device
        elif visitor is not None and visitor.external_id is None:
            visitor = await storage.update_visitor(ws_id, visitor.id, external_id=identity.user_id)
        else:
            visitor = None
    created = visitor is None
    if visitor is None:
        kept = TOKEN_PREFIX + secrets.token_urlsafe(32)
        visitor = await storage.create_visitor(
            ws_id,
            token_hash=_hash(kept),
            external_id=identity.user_id if identity else None,
            user_agent=user_agent,
            ip=ip,
        )
    elif kept is None:
        kept = TOKEN_PREFIX + secrets.token_urlsafe(32)
        visitor = await storage.update_visitor(ws_id, visitor.id, token_hash=_hash(kept))
    return IdentifiedVisitor(
        visitor=visitor, token=kept, identified=identified, first_time=first_time, created=created
    )
