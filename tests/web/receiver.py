"""A real HTTP receiver for webhook tests: h11 over Trio sockets on a loopback port.

Every request is recorded (method, path, headers, raw body) and sent to ``received`` (a channel
the test reads with a deadline); the answer's status is ``status`` at that moment, so a test
can make the receiver fail first and succeed later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import h11
import trio

READ_TIMEOUT_S = 10.0


@attrs.frozen(kw_only=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@attrs.define(eq=False)
class Receiver:
    port: int
    status: int
    received: trio.MemoryReceiveChannel[Received]
    _send: trio.MemorySendChannel[Received]
    log: list[Received] = attrs.field(factory=list)
    # While ``hold`` is True, answers wait for ``release`` (a receiver that hangs).
    hold: bool = False
    release: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def next(self, timeout_s: float = 15.0) -> Received:
        with trio.fail_after(timeout_s):
            return await self.received.receive()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                if request is None:
                    return
                status = self.status
                got = Received(
                    method=request.method.decode(),
                    path=request.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in request.headers},
                    body=body,
                    status=status,
                )
                self.log.append(got)
                self._send.send_nowait(got)
            if self.hold:
                await self.release.wait()
            with trio.fail_after(READ_TIMEOUT_S):
                response = h11.Response(
                    status_code=status,
                    headers=[("content-length", "2"), ("connection", "close")],
                )
                await stream.send_all(conn.send(response) or b"")
                await stream.send_all(conn.send(h11.Data(data=b"ok")) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        except (trio.BrokenResourceError, trio.TooSlowError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()


@asynccontextmanager
async def run_receiver(status: int = 200) -> AsyncIterator[Receiver]:
    """Serve on a free loopback port until the block exits."""
    send, receive = trio.open_memory_channel[Received](1000)
    receiver = Receiver(port=0, status=status, received=receive, send=send)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1")
        )
        receiver.port = listeners[0].socket.getsockname()[1]
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
