"""Schema-driven fuzzing of the admin API (schemathesis over /openapi.json, real HTTP).

Bounded: the coverage and fuzzing phases with a few examples per operation (about a minute).
Checks: no 5xx, every status documented, content types and bodies conform to the document.
The fuzzer acts as the operator's owner, so it reaches every operation past authentication.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio

from tests.web.server import run_test_server

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


@pytest.mark.slow
@pytest.mark.timeout(360)  # its own bound is fail_after(300) around schemathesis
async def test_openapi_fuzz_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path,
) -> None:
    binary = _schemathesis()
    async with run_test_server(tmp_path) as srv:
        cmd = [
            binary,
            "run",
            f"{srv.base_url}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "8",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {srv.acme.owner.token}",
            "--suppress-health-check",
            "all",
            "--request-timeout",
            "20",
            "--generation-deterministic",
        ]
        with trio.fail_after(300):
            done = await trio.run_process(
                cmd, capture_stdout=True, capture_stderr=True, check=False
            )
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report[-6000:]
    assert "passed" in report
