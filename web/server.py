"""Run the app on Hypercorn with explicit limits and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from web.app import create_app
from web.settings import Settings


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.websocket_max_message_size = settings.ws_max_message_bytes
    config.read_timeout = int(settings.read_timeout_s)
    config.graceful_timeout = settings.shutdown_grace_s
    config.accesslog = None
    if settings.tls_enabled:
        config.certfile = settings.tls_cert
        config.keyfile = settings.tls_key
    return config


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            print(
                f"livechat: received {signal.Signals(signum).name}, shutting down", file=sys.stderr
            )
            return


async def run_server(settings: Settings) -> None:
    app = create_app(settings)
    base = settings.base_url
    print(f"livechat: serving on {base}", flush=True)
    print(f"  health:        {base}/healthz", flush=True)
    await serve(app, hypercorn_config(settings), shutdown_trigger=_wait_for_signal)
