"""Two-factor login: TOTP codes (RFC 6238, via pyotp), one-time recovery codes, the workspace
policy, and the short-lived signed tokens that carry a login between its steps.

A password login of an agent with two-factor enabled (or required by the workspace) does not
open a session: it answers a *pending-login token*, HMAC-signed with the server's secret key,
naming the agent, its password's age and an expiry (``login_second_factor_ttl_s``). Only the
second step (a TOTP code or a recovery code, throttled like passwords) turns it into a session.
The token is not a session: it authenticates no other request, and changing the password
voids it. The same signer carries the OpenID Connect state in a cookie (``web.oidc``).

Recovery codes are 80 random bits each, shown once and stored as SHA-256 hashes (enough for a
secret that is not a human-chosen password); each works once. A TOTP code is accepted for the
current 30 s step and one step either side, and never twice (the database keeps the last step).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any, Literal

import pyotp
import segno

from storage import Agent, Role, Workspace
from web.errors import Unauthorized

TOTP_DIGITS = 6
TOTP_INTERVAL_S = 30
TOTP_WINDOW_STEPS = 1  # a code of the previous or next step is accepted too (clock skew)
RECOVERY_CODES = 10
REQUIRE_2FA_KEY = "require_2fa"  # workspace setting: "none" | "admins" | "all"
Require2fa = Literal["none", "admins", "all"]
_CODE = re.compile(r"^\d{6}$")
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_totp_secret() -> str:
    """160 random bits in base32, what authenticator apps expect (RFC 4226's recommendation)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL_S).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg_data_uri(uri: str) -> str:
    """The otpauth URI as a QR code, an SVG data URI (pure Python: no image library)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def is_totp_code(code: str) -> bool:
    return bool(_CODE.match(code.strip().replace(" ", "")))


def totp_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to (within the window), or None if it matches none."""
    code = code.strip().replace(" ", "")
    if not _CODE.match(code):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL_S)
    current = int((time.time() if now is None else now) // TOTP_INTERVAL_S)
    found = None
    for step in range(current - TOTP_WINDOW_STEPS, current + TOTP_WINDOW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # no early exit: the same work whatever matched
    return found


def new_recovery_codes() -> list[str]:
    """Ten codes like ``K7Q2-M9XD-4HPA-WT3N`` (80 bits each)."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_B32) for _ in range(16))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_hash(code: str) -> str:
    """Hash of a recovery code as typed: case, spaces and dashes do not matter."""
    normal = re.sub(r"[\s-]", "", code).upper()
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def require_2fa(workspace: Workspace) -> Require2fa:
    value = workspace.settings.get(REQUIRE_2FA_KEY)
    return value if value in ("admins", "all") else "none"


def must_use_2fa(workspace: Workspace, agent: Agent) -> bool:
    """Whether the workspace policy requires this agent to log in with a second factor."""
    policy = require_2fa(workspace)
    if policy == "all":
        return True
    return policy == "admins" and agent.role in (Role.OWNER, Role.ADMIN)


class FlowSigner:
    """Short-lived, purpose-bound tokens signed with a key derived from the server secret."""

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(
            secret_key.encode("utf-8"), b"livechat login flow v1", hashlib.sha256
        ).digest()

    def _mac(self, purpose: str, body: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + body, hashlib.sha256).digest()

    def sign(self, purpose: str, payload: dict[str, Any], *, ttl_s: float) -> str:
        data = dict(payload, exp=time.time() + ttl_s)
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return f"{_b64(body)}.{_b64(self._mac(purpose, body))}"

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        """The payload of a valid, unexpired token of this purpose; else 401."""
        invalid = Unauthorized(
            "the login step has expired or is not valid; log in again", code="login_expired"
        )
        body_b64, _, mac_b64 = token.partition(".")
        try:
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except ValueError:
            raise invalid from None
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise invalid
        try:
            data = json.loads(body)
        except ValueError:
            raise invalid from None
        if not isinstance(data, dict) or not float(data.get("exp", 0)) > time.time():
            raise invalid
        return data


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
