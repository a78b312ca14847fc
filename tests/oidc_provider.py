"""A small OpenID Connect provider for the tests, on loopback (plain http).

Discovery document, JWKS (an RSA key made by joserfc), an authorization endpoint that approves
the configured user at once (no login page) and a token endpoint that checks the client
secret, the redirect URI and the PKCE verifier, then issues an RS256-signed ID token with the
nonce it was given. ``tamper`` makes it misbehave for the negative tests.

It runs ``http.server`` in a daemon thread so that both the async web tests and the
synchronous browser tests can use it; ``stop`` shuts it down within a bound.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "livechat-test"
CLIENT_SECRET = "test-client-secret-123"


class TestProvider:
    __test__ = False

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.user: dict[str, Any] = {
            "sub": "user-1",
            "preferred_username": "dana",
            "name": "Dana SSO",
            "email": "dana@example.test",
            "roles": ["support"],
        }
        self.tamper: str | None = None  # "nonce", "audience", "signature", "deny", "hang"
        self.released = threading.Event()  # "hang": requests wait for this (or 30 s)
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests = 0
        self.discovery_requests = 0
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()  # returns once serve_forever has stopped (its poll is 0.5 s)
        self._server.server_close()
        self._thread.join(timeout=10)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def id_token(self, request: dict[str, Any], access_token: str) -> str:
        now = int(time.time())
        claims = {
            **self.user,
            "iss": self.issuer,
            "aud": "someone-else" if self.tamper == "audience" else CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": "wrong-nonce" if self.tamper == "nonce" else request["nonce"],
            "at_hash": create_half_hash(access_token, "RS256").decode(),
        }
        key = self.other_key if self.tamper == "signature" else self.key
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if provider.tamper == "hang":
                    provider.released.wait(30)
                    return self._json(503, {"error": "too_late"})
                if url.path == "/.well-known/openid-configuration":
                    with provider.lock:
                        provider.discovery_requests += 1
                    return self._json(200, provider.discovery())
                if url.path == "/jwks":
                    return self._json(200, {"keys": [provider.key.as_dict(private=False)]})
                if url.path == "/authorize":
                    return self._authorize({k: v[0] for k, v in parse_qs(url.query).items()})
                return self._json(404, {"error": "not_found"})

            def _authorize(self, q: dict[str, str]) -> None:
                ok = (
                    q.get("response_type") == "code"
                    and q.get("client_id") == CLIENT_ID
                    and q.get("code_challenge_method") == "S256"
                    and "openid" in q.get("scope", "").split()
                )
                if not ok:
                    return self._json(400, {"error": "invalid_request"})
                if provider.tamper == "deny":
                    params = {"error": "access_denied", "state": q.get("state", "")}
                else:
                    code = secrets.token_urlsafe(16)
                    with provider.lock:
                        provider.codes[code] = dict(q)
                    params = {"code": code, "state": q.get("state", "")}
                self.send_response(302)
                self.send_header("Location", q["redirect_uri"] + "?" + urlencode(params))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    return self._json(404, {"error": "not_found"})
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self._json(401, {"error": "invalid_client"})
                with provider.lock:
                    provider.token_requests += 1
                    request = provider.codes.pop(form.get("code", ""), None)
                if request is None or form.get("grant_type") != "authorization_code":
                    return self._json(400, {"error": "invalid_grant"})
                if form.get("redirect_uri") != request["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant"})
                verifier = form.get("code_verifier", "")
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .decode()
                    .rstrip("=")
                )
                if challenge != request.get("code_challenge"):
                    return self._json(400, {"error": "invalid_grant"})
                access = secrets.token_urlsafe(24)
                return self._json(
                    200,
                    {
                        "access_token": access,
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": provider.id_token(request, access),
                    },
                )

        return Handler


@contextmanager
def running_provider() -> Iterator[TestProvider]:
    provider = TestProvider()
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
