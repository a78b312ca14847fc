"""The Quart-Trio application factory."""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from web.settings import Settings


def create_app(settings: Settings) -> QuartTrio:
    """Build the app for one settings object; blueprints register per area."""
    app = QuartTrio(__name__)
    app.config["LIVECHAT_SETTINGS"] = settings

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response('{"status":"ok"}', status=200, content_type="application/json")

    return app
