"""Small clients for the web tests: HTTP over real sockets (``http.client`` in a worker thread)
and a protocol-speaking WebSocket wrapper over trio-websocket."""

from __future__ import annotations

import http.client
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        try:
            return str(self.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None


def _request_sync(
    method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> HttpResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        merged: dict[str, str] = {}
        for key, value in resp.getheaders():
            k = key.lower()
            merged[k] = f"{merged[k]}\n{value}" if k in merged else value
        return HttpResponse(resp.status, merged, data)
    finally:
        conn.close()


class Http:
    """An HTTP client with an optional cookie session (``lc_session``) and CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.bearer: str | None = None

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> HttpResponse:
        hdrs = {"Accept": "application/json"}
        body = raw
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        if self.cookie:
            hdrs["Cookie"] = f"lc_session={self.cookie}"
        if self.csrf and csrf and method not in ("GET", "HEAD"):
            hdrs["X-CSRF-Token"] = self.csrf
        if self.bearer:
            hdrs["Authorization"] = f"Bearer {self.bearer}"
        hdrs.update(headers or {})
        resp = await trio.to_thread.run_sync(
            _request_sync, method, self.base_url + path, body, hdrs
        )
        cookie = resp.headers.get("set-cookie", "")
        for line in cookie.split("\n"):
            if line.startswith("lc_session="):
                value = line.split(";", 1)[0].split("=", 1)[1]
                self.cookie = value or None
        return resp

    async def get(self, path: str, **kw: Any) -> HttpResponse:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> HttpResponse:
        return await self.request("POST", path, {} if body is None else body, **kw)

    async def login(self, username: str, password: str) -> HttpResponse:
        resp = await self.post("/api/v1/auth/login", {"username": username, "password": password})
        if resp.status == 200 and "csrf_token" in resp.json():  # not a two-factor pending step
            self.csrf = resp.json()["csrf_token"]
        return resp


def bearer(base_url: str, token: str) -> Http:
    client = Http(base_url)
    client.bearer = token
    return client


class Peer:
    """One protocol client: numbered requests, replies matched by id, pushes queued."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.pushes: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.batches: list[int] = []  # protocol 3: the size of each array received
        self._unread: deque[dict[str, Any]] = deque()

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame; those of a protocol 3 array one by one (``batches`` counts them)."""
        with trio.fail_after(timeout):
            while not self._unread:
                data = json.loads(await self.ws.get_message())
                if isinstance(data, list):
                    self.batches.append(len(data))
                    self._unread.extend(data)
                elif data.get("type") == "ping":
                    await self.ws.send_message(json.dumps({"type": "pong"}))
                else:
                    self._unread.append(data)
            frame: dict[str, Any] = self._unread.popleft()
            self.frames.append(frame)
            return frame

    async def request(self, kind: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        """Send a request; return its result/error frame, keeping pushes seen meanwhile."""
        rid = str(next(self._ids))
        await self.ws.send_message(json.dumps({"type": kind, "id": rid, **fields}))
        return await self.reply(rid, timeout)

    async def reply(self, rid: str | int | None, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("type") in ("result", "error") and frame.get("id") == rid:
                    return frame
                self.pushes.append(frame)

    async def push(self, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The next push of ``kind`` (already queued or arriving) whose fields match."""

        def matches(frame: dict[str, Any]) -> bool:
            return frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items())

        for i, frame in enumerate(self.pushes):
            if matches(frame):
                return self.pushes.pop(i)
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if matches(frame):
                    return frame
                self.pushes.append(frame)

    async def closed(self, timeout: float = 10) -> int | None:
        """Read until the server closes; returns the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code if closed.reason else None


@asynccontextmanager
async def open_peer(
    url: str, *, origin: str | None = None, cookie: str | None = None
) -> AsyncIterator[Peer]:
    headers: list[tuple[bytes, bytes]] = []
    if origin:
        headers.append((b"Origin", origin.encode()))
    if cookie:
        headers.append((b"Cookie", f"lc_session={cookie}".encode()))
    async with open_websocket_url(url, extra_headers=headers) as ws:
        yield Peer(ws)


async def visitor(
    srv: Any, peer: Peer, *, token: str | None = None, resume: dict[str, int] | None = None
) -> dict[str, Any]:
    reply = await peer.request(
        "hello",
        token=token,
        identity=None,
        resume=resume or {},
        page={"url": "http://site.test/pricing", "title": "Pricing", "referrer": None},
    )
    assert reply["type"] == "result", reply
    return dict(reply["result"])
