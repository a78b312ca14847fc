"""The S3 file store, for real: boto3 against moto's standalone S3 server on loopback."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from storage import S3BlobStore, StorageUnavailable
from tests.web.server import free_port

boto3 = pytest.importorskip("boto3")
START_TIMEOUT_S = 30.0
KEYS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def _moto_server() -> str:
    found = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(found).exists():
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """A local S3-compatible server; stopped (terminate, then kill) after the module."""
    port = free_port()
    proc = subprocess.Popen(
        [_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()

    def pump() -> None:  # readline cannot time out: a thread reads, the test waits bounded
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.search(r"Running on http", line):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("moto_server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def new_bucket(s3_url: str, name: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=name)
    return client


def object_bytes(client: Any, bucket: str, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def keys_in(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


async def test_s3_store_puts_gets_and_deletes_objects(s3_url: str) -> None:
    client = await trio.to_thread.run_sync(new_bucket, s3_url, "files-roundtrip")
    store = S3BlobStore(bucket="files-roundtrip", endpoint_url=s3_url, prefix="lc/", **KEYS)
    await store.put("file-0001-abcdefgh", b"\x89PNG bytes")
    assert await store.get("file-0001-abcdefgh") == b"\x89PNG bytes"
    assert await store.exists("file-0001-abcdefgh")
    assert await store.get("file-0002-missing0") is None
    assert await trio.to_thread.run_sync(keys_in, client, "files-roundtrip") == [
        "lc/file-0001-abcdefgh"
    ]
    assert await store.delete(["file-0001-abcdefgh"]) == 1
    assert await trio.to_thread.run_sync(keys_in, client, "files-roundtrip") == []


async def test_an_unreachable_store_is_storage_unavailable(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3BlobStore(bucket="nope", endpoint_url=dead, timeout_s=2.0, **KEYS)
    with pytest.raises(StorageUnavailable) as caught:
        await store.put("file-0003-abcdefgh", b"x")
    assert "127.0.0.1" not in str(caught.value)  # no service text for clients


async def test_server_with_s3_serves_and_erases_files(s3_url: str, tmp_path: Path) -> None:
    from tests.web.client import Http, open_peer, visitor
    from tests.web.server import run_test_server
    from tests.web.test_files import PNG, upload_as_visitor

    client = await trio.to_thread.run_sync(new_bucket, s3_url, "files-server")
    settings = {
        "files_s3_bucket": "files-server",
        "files_s3_endpoint_url": s3_url,
        "files_s3_region": "us-east-1",
        "files_s3_access_key_id": "test",
        "files_s3_secret_access_key": "test",
    }
    async with run_test_server(tmp_path, **settings) as srv:
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            hello = await visitor(srv, vis)
            up = await upload_as_visitor(srv, hello["visitor_token"], PNG)
            assert up.status == 201, up.body
            file_id = up.json()["id"]
            sent = await vis.request(
                "send_message", client_msg_id="s3-1", text="", attachments=[file_id]
            )
            assert sent["type"] == "result", sent
        assert await trio.to_thread.run_sync(keys_in, client, "files-server") == [file_id]
        # Sealed before it reached the bucket: the object does not hold the picture.
        stored = await trio.to_thread.run_sync(object_bytes, client, "files-server", file_id)
        assert PNG not in stored and len(stored) > len(PNG)
        agent = Http(srv.base_url)
        agent.bearer = srv.acme.owner.token
        got = await agent.get(f"/api/v1/files/{file_id}")
        assert got.status == 200 and got.body == PNG
        storage = srv.services.storage  # type: ignore[union-attr]
        await storage.erase_visitor(srv.acme.id, hello["visitor_id"])
        assert await trio.to_thread.run_sync(keys_in, client, "files-server") == []
        assert not (tmp_path / "livechat.db.files").exists()  # nothing went to local disk
