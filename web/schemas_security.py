"""Bodies of the two-factor and single sign-on endpoints (``web.api_security``).

Secrets appear only where a client must see them once: the TOTP secret while enrolling, the
recovery codes when they are made. The SSO client secret is write-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from storage import Role
from web.wire import FieldInvalid, text

TOKEN = 2000
SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{1,39}"


@attrs.frozen(kw_only=True)
class SecondFactorRequired:
    """The password was right; no session yet. Send a code (``totp``) or enroll first
    (``enroll``, the workspace requires two-factor login) with ``pending_token``."""

    second_factor: Literal["totp", "enroll"]
    pending_token: str
    expires_in_s: float


@attrs.frozen(kw_only=True)
class SecondFactorIn:
    pending_token: str = attrs.field(**text(max_len=TOKEN, min_len=1))
    code: str = attrs.field(
        **text(max_len=64, min_len=1, description="a 6-digit TOTP code or a recovery code")
    )


@attrs.frozen(kw_only=True)
class PendingIn:
    pending_token: str = attrs.field(**text(max_len=TOKEN, min_len=1))


@attrs.frozen(kw_only=True)
class CodeIn:
    code: str = attrs.field(**text(max_len=64, min_len=1))


@attrs.frozen(kw_only=True)
class EnrollmentOut:
    """Scan ``qr_svg`` (an SVG data URI) or type ``secret`` into an authenticator app, then
    confirm with a code."""

    secret: str
    otpauth_uri: str
    qr_svg: str


@attrs.frozen(kw_only=True)
class RecoveryCodesOut:
    """One-time recovery codes, shown only now (stored hashed)."""

    recovery_codes: tuple[str, ...]


@attrs.frozen(kw_only=True)
class TwoFactorStatus:
    enabled: bool
    recovery_codes_left: int
    required: bool  # by the workspace policy, for this account


@attrs.frozen(kw_only=True)
class SecuritySettings:
    """Who must log in with a second factor: nobody, owners and admins, or every agent."""

    require_2fa: Literal["none", "admins", "all"]


@attrs.frozen(kw_only=True)
class SecurityOverview:
    require_2fa: Literal["none", "admins", "all"]
    two_factor_agent_ids: tuple[str, ...]  # agents with a confirmed enrollment


def _role_map(_inst: object, attribute: attrs.Attribute[object], value: object) -> None:
    if not isinstance(value, Mapping):
        return
    if len(value) > 50:
        raise FieldInvalid(attribute.name, "at most 50 entries")
    roles = ", ".join(r.value for r in Role)
    for key, role in value.items():
        if not isinstance(key, str) or not (1 <= len(key) <= 200):
            raise FieldInvalid(attribute.name, "claim values must be 1 to 200 characters")
        try:
            Role(role)
        except ValueError:
            raise FieldInvalid(f"{attribute.name}.{key}", f"must be one of: {roles}") from None


@attrs.frozen(kw_only=True)
class SsoConfigIn:
    slug: str = attrs.field(
        **text(
            max_len=40,
            min_len=2,
            pattern=SLUG_PATTERN,
            description="what users type on the login page; lower-case letters, digits, -",
        )
    )
    issuer: str = attrs.field(**text(max_len=500, min_len=8))
    client_id: str = attrs.field(**text(max_len=500, min_len=1))
    client_secret: str | None = attrs.field(
        default=None, **text(max_len=1000, min_len=1, description="omit to keep the stored one")
    )
    role_claim: str = attrs.field(default="roles", **text(max_len=100, min_len=1))
    role_map: Mapping[str, Role] = attrs.field(factory=dict, validator=_role_map)
    default_role: Role | None = Role.AGENT
    sso_only: bool = False
    enabled: bool = True


@attrs.frozen(kw_only=True)
class SsoConfigOut:
    slug: str
    issuer: str
    client_id: str
    has_client_secret: bool
    role_claim: str
    role_map: Mapping[str, Role]
    default_role: Role | None
    sso_only: bool
    enabled: bool
    redirect_uri: str  # register this at the identity provider
    login_url: str  # where "Sign in with SSO" starts
