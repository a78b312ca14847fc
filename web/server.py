"""Run the app on Hypercorn with explicit limits and a two-phase graceful shutdown.

Start-up: storage → secret → engine (``open_services``) → first-start seeding → Hypercorn.
On SIGTERM/SIGINT: (1) stop accepting (``draining``: /readyz answers 503, new upgrades are
refused), close every socket with 1001 so clients reconnect elsewhere, then return from the
shutdown trigger so Hypercorn stops listening and finishes requests within
``server.shutdown_grace_s``; (2) the engine drains within ``engine.shutdown_deadline_s``; storage
closes last.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial

import attrs
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from hypercorn.trio import serve
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

from web.app import create_app
from web.bootstrap import FirstStart, bootstrap
from web.cluster import ClusterGateway
from web.protocol import CloseCode
from web.services import Services, open_services
from web.settings import Settings, generate_node_id

log = logging.getLogger("livechat.server")


class FailingWSStream(WSStream):
    """Hypercorn's WebSocket stream, but a peer's protocol violation gets a close frame.

    wsproto reports a violation by the peer (invalid UTF-8 in a text frame: 1007; a malformed
    frame: 1002) as a ``CloseConnection`` event while the connection is still open. Hypercorn
    (0.18) only answers close frames the peer sent, so it dropped the TCP connection with no
    close frame, and the client saw 1006 instead of the reason. RFC 6455 section 7.1.7: fail
    the connection by sending a close frame with the code. The loop is Hypercorn's own
    ``_handle_events`` plus that branch.
    """

    async def _handle_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    break
                if event.message_finished and self.app_put is not None:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                elif self.connection.state == ConnectionState.OPEN:
                    reason = (event.reason or "")[:100]
                    await self._send_wsproto_event(CloseConnection(code=event.code, reason=reason))
                await self.send(StreamClosed(stream_id=self.stream_id))


def install_failing_ws_stream() -> None:
    """Make Hypercorn's HTTP/1.1 and HTTP/2 protocols use ``FailingWSStream``. Idempotent."""
    hypercorn.protocol.h11.WSStream = FailingWSStream  # type: ignore[attr-defined]
    hypercorn.protocol.h2.WSStream = FailingWSStream  # type: ignore[attr-defined]


def hypercorn_config(settings: Settings) -> HypercornConfig:
    install_failing_ws_stream()
    config = HypercornConfig()
    config.bind = [f"{settings.server.host}:{settings.server.port}"]
    config.websocket_max_message_size = settings.websocket.hard_max_message_bytes
    config.websocket_ping_interval = None  # the protocol has its own ping/pong frames
    config.read_timeout = effective_read_timeout(settings)
    # Hypercorn's idle timer runs from the accept until a request's headers are complete (and
    # again between keep-alive requests); data arriving does not restart it. So this also
    # closes slow-header ("slowloris") connections, without cutting live WebSockets (the
    # timer is stopped once their upgrade request has been read).
    config.keep_alive_timeout = settings.server.http_header_timeout_s
    config.ssl_handshake_timeout = settings.server.http_header_timeout_s
    config.h11_max_incomplete_size = 16 * 1024
    config.h2_max_inbound_frame_size = 64 * 1024
    config.graceful_timeout = settings.server.shutdown_grace_s
    config.accesslog = None
    # Hypercorn's own logger through our root handler: given "-" (its default) it adds a
    # stderr handler of its own, and every line ("Running on ...") printed twice.
    config.errorlog = logging.getLogger("hypercorn.error")
    if settings.server.tls_enabled:
        config.certfile = settings.server.tls_cert
        config.keyfile = settings.server.tls_key
    return config


def effective_read_timeout(settings: Settings) -> int | None:
    """Hypercorn's ``read_timeout``, high enough never to cut a live WebSocket first.

    Hypercorn applies ``read_timeout`` to every read on the TCP connection, WebSockets included:
    a socket on which the peer sent nothing for that long is dropped without a close frame
    (1006). Idle WebSockets are ours to close, with 4001, once nothing was heard for
    ``websocket.effective_dead_peer_timeout_s`` (checked about every second; the answer to a
    ping can lag by a ping interval under load), so the timeout is raised above that; it still
    bounds stalled HTTP reads. 0 disables it, as before.
    """
    if settings.server.read_timeout_s <= 0:
        return None
    floor = (
        settings.websocket.effective_dead_peer_timeout_s + settings.websocket.ping_interval_s + 2.0
    )
    return math.ceil(max(settings.server.read_timeout_s, floor))


SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def wait_for_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        print(
            f"livechat: received {signal.Signals(signum).name}, shutting down",
            file=sys.stderr,
            flush=True,
        )
        return


async def drain(services: Services) -> None:
    """Phase one of shutdown: refuse new work and close live sockets with 1001 (in a cluster,
    the sockets other nodes serve through this one too)."""
    services.draining = True
    if isinstance(services.gateway, ClusterGateway):
        services.gateway.going_away()
    await services.sockets.close_all(
        CloseCode.GOING_AWAY, "server shutdown", timeout_s=services.settings.server.shutdown_grace_s
    )


async def _shutdown_trigger(services: Services, signals: AsyncIterator[int]) -> None:
    await wait_for_signal(signals)
    await drain(services)


_CONTEXT_FIELDS = ("request_id", "connection_id", "kind", "ip")


class ContextFormatter(logging.Formatter):
    """``time level logger message key=value...`` with the request/connection context that
    callers pass as ``extra`` (ids and IPs only: never secrets or message bodies)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in _CONTEXT_FIELDS
            if getattr(record, name, None)
        )
        return f"{line} {context}" if context else line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def print_banner(settings: Settings, first: FirstStart | None) -> None:
    base = settings.server.base_url
    lines = [
        f"livechat: serving on {base}",
        f"  health:        {base}/healthz",
        f"  console:       {base}/console",
        f"  demo page:     {base}/demo",
        f"  admin API:     {base}/api/docs  (OpenAPI: {base}/openapi.json)",
    ]
    if first is not None:
        lines += [
            "",
            f"First start: created workspace {first.workspace_name!r} "
            f"(widget key {first.widget_key}).",
            "These passwords are shown ONCE; change them after logging in:",
            f"  owner: username {first.owner_username!r} password {first.owner_password!r}",
        ]
        if first.agent_username:
            lines.append(
                f"  agent: username {first.agent_username!r} password {first.agent_password!r}"
            )
        lines.append(f"Log in at {base}/console (or POST {base}/api/v1/auth/login).")
    print("\n".join(lines), flush=True)


def tune_gc(settings: Settings) -> None:
    """Keep Python's cyclic GC off the routing latency tail.

    With thousands of live chats, default thresholds ran a young collection every 700
    allocations and full collections that paused the event loop for up to 0.47 s (py-spy: about
    a third of the CPU). Freezing what start-up loaded moves it out of every later collection,
    and a higher generation-0 threshold makes collections rarer; reference counting still frees
    everything without cycles at once. ``gc_gen0_threshold`` 0 leaves the GC as Python sets it.
    """
    if settings.server.gc_gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.server.gc_gen0_threshold, 20, 100)


class _Ready:
    """Hypercorn's ``task_status``: once it listens, one byte on the ``--workers`` parent's
    pipe (web/workers.py) says this worker serves."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def started(self, value: object = None) -> None:
        if self._fd is not None:
            os.write(self._fd, b"1")
            os.close(self._fd)
            self._fd = None


async def _exit_with_parent(parent_fd: int) -> None:
    """A worker of ``--workers N`` ends with its parent, even a killed one: the parent holds
    the write end of this pipe and never writes, so end of file means it is gone. The worker
    then shuts down as on SIGTERM (sockets closed with 1001, the engine drained)."""
    async with trio.lowlevel.FdStream(parent_fd) as lifeline:
        while await lifeline.receive_some(1):
            pass
    log.warning("the --workers parent is gone: shutting down")
    os.kill(os.getpid(), signal.SIGTERM)


async def run_server(
    settings: Settings,
    *,
    listen_fd: int | None = None,
    ready_fd: int | None = None,
    parent_fd: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. ``listen_fd``: accept on this inherited socket (a worker of
    ``--workers N``), telling the parent on ``ready_fd`` once listening, and ending when the
    parent's ``parent_fd`` pipe closes."""
    configure_logging(settings.server.log_level)
    if settings.cluster.node_id is None:
        cluster = attrs.evolve(settings.cluster, node_id=generate_node_id())
        settings = attrs.evolve(settings, cluster=cluster)
        if cluster.bus_url is not None:
            log.warning(
                "generated node id %s (give --node-id to keep it across restarts)",
                cluster.node_id,
            )
    async with open_services(settings) as services:
        first = await bootstrap(services)
        app = create_app(settings, services)
        tune_gc(settings)
        # Catch SIGTERM/SIGINT from before the banner: a signal sent as soon as it is printed
        # waits here for the trigger instead of interrupting the process un-gracefully.
        with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            print_banner(settings, first)
            config = hypercorn_config(settings)
            if listen_fd is not None:
                config.bind = [f"fd://{listen_fd}"]
            async with trio.open_nursery() as nursery:
                if parent_fd is not None:
                    nursery.start_soon(_exit_with_parent, parent_fd)
                await serve(
                    app,
                    config,
                    shutdown_trigger=partial(_shutdown_trigger, services, signals),
                    task_status=_Ready(ready_fd),
                )
                nursery.cancel_scope.cancel()
