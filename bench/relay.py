"""The reference ceiling: a bare Quart-Trio WebSocket relay on Hypercorn.

No authentication, no storage, no routing: two sockets that join the same pair relay every text
frame to each other, byte for byte. ``livechat bench e2e`` drives this relay with the very load
generator it uses against the real server, in the same run, so the ratio between the two says how
much of the stack's ceiling the server keeps.

Run on its own as ``python -m bench.relay --port 8765``. Endpoints:

- ``GET /healthz`` answers ``{"status":"ok"}``;
- ``WS /ws/relay?pair=<id>&role=<visitor|agent>``: join one side of a pair. A frame sent before
  the other side has joined waits for it (the sender is paused, which is backpressure, not loss).

It stops on SIGTERM or SIGINT (Hypercorn's ``shutdown_trigger``).
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, websocket
from quart.wrappers import Websocket
from quart_trio import QuartTrio

ROLES = ("visitor", "agent")
CLOSE_BAD_REQUEST = 1008


@attrs.define
class _Pair:
    """Both ends of one pair; ``joined[role]`` is set once that role's socket is open."""

    sockets: dict[str, Websocket] = attrs.field(factory=dict)
    joined: dict[str, trio.Event] = attrs.field(factory=lambda: {r: trio.Event() for r in ROLES})


@attrs.define
class _Registry:
    pairs: dict[str, _Pair] = attrs.field(factory=dict)

    def pair(self, pair_id: str) -> _Pair:
        found = self.pairs.get(pair_id)
        if found is None:
            found = self.pairs[pair_id] = _Pair()
        return found


def create_relay_app() -> QuartTrio:
    """The relay as a Quart-Trio app; its registry lives as long as the app."""
    app = QuartTrio(__name__)
    registry = _Registry()

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response('{"status":"ok"}', status=200, content_type="application/json")

    @app.websocket("/ws/relay")
    async def relay() -> None:
        pair_id = websocket.args.get("pair", "")
        role = websocket.args.get("role", "")
        if not pair_id or role not in ROLES:
            await websocket.close(CLOSE_BAD_REQUEST)
            return
        await websocket.accept()
        pair = registry.pair(pair_id)
        me: Websocket = websocket._get_current_object()  # type: ignore[attr-defined]
        pair.sockets[role] = me
        pair.joined[role].set()
        other = "agent" if role == "visitor" else "visitor"
        try:
            while True:
                data = await me.receive()
                peer = pair.sockets.get(other)
                if peer is None:
                    await pair.joined[other].wait()
                    peer = pair.sockets[other]
                await peer.send(data)
        finally:
            if pair.sockets.get(role) is me:
                del pair.sockets[role]
                pair.joined[role] = trio.Event()
            if not pair.sockets:
                registry.pairs.pop(pair_id, None)

    return app


def relay_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    config.websocket_ping_interval = None
    return config


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def run_relay(host: str, port: int) -> None:
    print(f"relay: serving on http://{host}:{port}", flush=True)
    await serve(create_relay_app(), relay_config(host, port), shutdown_trigger=_wait_for_signal)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    trio.run(run_relay, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
