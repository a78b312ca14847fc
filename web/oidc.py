"""OpenID Connect sign-in (authorization code flow with PKCE) through Authlib.

Authlib builds the authorization URL, exchanges the code (``client_secret_basic``) and
validates the ID token (signature against the provider's JWKS, ``iss``, ``aud``, ``exp``,
``iat``, ``nonce``, ``at_hash``); nothing here parses a JWT by hand. The provider is found by
OpenID discovery (``{issuer}/.well-known/openid-configuration``), whose ``issuer`` must equal
the configured one.

Calls to the provider are blocking httpx2 requests run in worker threads bounded by a
``CapacityLimiter`` (``sso_http_threads``); each request has ``sso_http_timeout_s`` as its
socket timeouts, and the whole exchange a deadline of a few times that. A cancelled caller
waits for its thread (never abandoned), which the socket timeouts bound.

Errors: ``OidcError`` with a stable ``code`` (``sso_unavailable`` the provider could not be
reached or answered nonsense, ``sso_denied`` the provider refused, ``sso_invalid_token`` the ID
token failed validation). The message never carries the provider's text.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx2
import trio
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from storage import SsoConfig

log = logging.getLogger("livechat.oidc")
T = TypeVar("T")
SCOPE = "openid profile email"
LEEWAY_S = 60
DISCOVERY_TTL_S = 300.0  # a provider's discovery document is fetched at most this often
DISCOVERY_CACHE_SIZE = 256


class OidcError(Exception):
    """A sign-in could not be completed; ``code`` is stable, the message is for people."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(kw_only=True)
class AuthRequest:
    """What the callback must get back: kept in a signed cookie between the two steps."""

    url: str
    state: str
    nonce: str
    code_verifier: str


def issuer_problem(issuer: str, *, allow_http_loopback: bool) -> str | None:
    """Why ``issuer`` is not acceptable (None: it is): https, or http on loopback if allowed."""
    try:
        parts = urlsplit(issuer)
    except ValueError:
        return "not a URL"
    if parts.query or parts.fragment or not parts.hostname:
        return "must be an https URL without query or fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return None
        return "http is allowed only for loopback addresses"
    return "must use https"


class OidcClient:
    """One per server: the thread limiter and the timeouts for identity-provider calls."""

    def __init__(self, *, timeout_s: float, threads: int) -> None:
        self._timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(max(1, threads))
        # issuer -> (fetched at, discovery document): "Sign in with SSO" is public, so clicks
        # must not each cost a request to the provider. Touched only from worker threads
        # under the GIL, by whole-value assignment.
        self._discovered: dict[str, tuple[float, dict[str, Any]]] = {}

    async def _run(self, fn: Callable[[], T]) -> T:
        # Discovery, token and keys: at most three requests, each bounded by the timeout.
        with trio.fail_after(self._timeout_s * 4 + 1):
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    def _get_json(self, http: httpx2.Client, url: str) -> dict[str, Any]:
        response = http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"{url}: not a JSON object")
        return data

    def _discover(self, http: httpx2.Client, issuer: str) -> dict[str, Any]:
        cached = self._discovered.get(issuer)
        if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL_S:
            return cached[1]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = self._get_json(http, url)
        if meta.get("issuer") != issuer:
            raise ValueError("the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(meta.get(key), str):
                raise ValueError(f"the discovery document has no {key}")
        if len(self._discovered) >= DISCOVERY_CACHE_SIZE:
            self._discovered = {}
        self._discovered[issuer] = (time.monotonic(), meta)
        return meta

    async def begin(self, config: SsoConfig, redirect_uri: str) -> AuthRequest:
        """The provider's authorization URL for a new sign-in, with fresh state and nonce."""

        def work() -> AuthRequest:
            with httpx2.Client(timeout=self._timeout_s) as http:
                meta = self._discover(http, config.issuer)
            state, nonce, verifier = generate_token(32), generate_token(32), generate_token(48)
            with OAuth2Client(
                client_id=config.client_id,
                client_secret=config.client_secret,
                scope=SCOPE,
                redirect_uri=redirect_uri,
                code_challenge_method="S256",
            ) as client:
                url, _ = client.create_authorization_url(
                    meta["authorization_endpoint"],
                    state=state,
                    code_verifier=verifier,
                    nonce=nonce,
                )
            return AuthRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

        return await self._call(work)

    async def complete(
        self, config: SsoConfig, *, redirect_uri: str, code: str, nonce: str, code_verifier: str
    ) -> Mapping[str, Any]:
        """Exchange the code and return the validated ID token's claims."""

        def work() -> Mapping[str, Any]:
            with httpx2.Client(timeout=self._timeout_s) as http:
                meta = self._discover(http, config.issuer)
                jwks = self._get_json(http, meta["jwks_uri"])
            with OAuth2Client(
                client_id=config.client_id,
                client_secret=config.client_secret,
                redirect_uri=redirect_uri,
                code_challenge_method="S256",
                timeout=self._timeout_s,
            ) as client:
                token = client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=code_verifier
                )
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise OidcError("the provider sent no ID token", code="sso_invalid_token")
            algorithms = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
            try:
                decoded = jwt.decode(
                    id_token,
                    KeySet.import_key_set(jwks),  # type: ignore[arg-type]
                    registry=JWSRegistry(algorithms=[a for a in algorithms if a != "none"]),
                )
                claims = CodeIDToken(
                    decoded.claims,
                    decoded.header,
                    {"iss": {"essential": True, "values": [config.issuer]}},
                    {
                        "nonce": nonce,
                        "client_id": config.client_id,
                        "access_token": token.get("access_token"),
                    },
                )
                claims.validate(leeway=LEEWAY_S)
            except (JoseError, ValueError) as err:
                log.warning("ID token refused: %s", type(err).__name__)
                raise OidcError(
                    "the identity provider's ID token is not valid", code="sso_invalid_token"
                ) from None
            return dict(claims)

        return await self._call(work)

    async def _call(self, work: Callable[[], T]) -> T:
        try:
            return await self._run(work)
        except OidcError:
            raise
        except trio.TooSlowError:
            raise OidcError(
                "the identity provider did not answer in time", code="sso_unavailable"
            ) from None
        except Exception as err:  # the edge: httpx2, Authlib and JSON errors of a foreign server
            from authlib.integrations.base_client import OAuthError

            log.warning("identity provider call failed: %s", type(err).__name__)
            if isinstance(err, OAuthError):
                raise OidcError(
                    "the identity provider refused the sign-in", code="sso_denied"
                ) from None
            raise OidcError(
                "the identity provider could not be reached", code="sso_unavailable"
            ) from None
