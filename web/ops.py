"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import trio
from quart import Blueprint, Response, current_app

from web import strictjson
from web.cluster import ClusterGateway
from web.services import SERVICES_KEY, Services

ops = Blueprint("ops", __name__)
READY_TIMEOUT_S = 2.0


def _json(http_status: int, **body: object) -> Response:
    return Response(strictjson.dumps(body), status=http_status, content_type="application/json")


@ops.get("/healthz")
async def healthz() -> Response:
    """The process is up and serving HTTP (no dependency checked)."""
    return _json(200, status="ok")


@ops.get("/readyz")
async def readyz() -> Response:
    """Ready for traffic: the database can commit, the engine runs and, in a cluster, this
    node listens on the bus; 503 while draining.

    "Can commit", not "answers a read": on SQLite reads go on while another process holds the
    write lock, and on both backends the group committer knows when commits are stuck or
    failing (``Storage.check_ready``)."""
    services: Services | None = current_app.config.get(SERVICES_KEY)
    if services is None:
        return _json(503, status="starting")
    if services.draining:
        return _json(503, status="draining")
    checks: dict[str, str] = {}
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            await services.storage.check_ready()
        checks["database"] = "ok"
    except Exception as err:  # readiness reports any failure, it never raises
        checks["database"] = type(err).__name__
    checks["engine"] = "ok" if services.engine.accepting else "stopped"
    if isinstance(services.gateway, ClusterGateway):  # a cluster: this node hears the bus
        checks["bus"] = await services.gateway.bus_status()
    ok = all(v == "ok" for v in checks.values())
    return _json(200 if ok else 503, status="ready" if ok else "not_ready", checks=checks)


@ops.get("/metrics")
async def metrics() -> Response:
    services: Services | None = current_app.config.get(SERVICES_KEY)
    if services is None:
        return Response("", status=503, content_type="text/plain")
    text = services.engine_metrics.render_prometheus() + services.metrics.render()
    text += await _backup_metrics(services)
    if services.webhooks is not None:
        text += services.webhooks.render_prometheus()
    if isinstance(services.gateway, ClusterGateway):  # a cluster: the bus and shared limits
        text += services.gateway.bus.metrics.render()
    return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")


async def _backup_metrics(services: Services) -> str:
    """The last finished ``livechat backup``, read from the database (the CLI records it there).

    0 means never. When the database does not answer in time the families are left out rather
    than failing the scrape; alert on ``absent()`` as well as on age.
    """
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            record = await services.storage.last_backup()
    except Exception:  # a scrape reports what it can, it never raises
        return ""
    at, size = (record.finished_at, record.size_bytes) if record else (0.0, 0)
    return (
        "# HELP livechat_backup_last_success_timestamp_seconds Unix time the last"
        " `livechat backup` finished (0: never).\n"
        "# TYPE livechat_backup_last_success_timestamp_seconds gauge\n"
        f"livechat_backup_last_success_timestamp_seconds {at:.3f}\n"
        "# HELP livechat_backup_last_size_bytes Size of that backup file.\n"
        "# TYPE livechat_backup_last_size_bytes gauge\n"
        f"livechat_backup_last_size_bytes {size}\n"
    )
