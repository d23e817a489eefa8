"""Schemathesis against the served OpenAPI schema: generated requests, no 5xx, answers as documented.

A live server on 127.0.0.1 (pytest-django's, on the test database) serves a scratch
project: a manager with a token, an annotator, tasks, an assignment, an export with its
files, a reward-model run and version, an import and a job of the test-only kind. The
``schemathesis`` command line then runs a bounded number of generated requests against
every operation of ``/api/v1/schema/`` as the manager, and fails on a server error, an
undocumented status code, a content type the schema does not name, or a body that does
not match its schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from tests.test_route_matrix import World, world  # noqa: F401 - the scratch project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(live_server, world: World, tmp_path: Path):  # noqa: F811
    token = Token.objects.get(user=world.people["manager"]).key
    report = tmp_path / "schemathesis.txt"
    # The path parameters name the scratch project's rows, so requests reach real objects;
    # everything else (query, body) is generated.
    fixed = {key: value for key, value in world.kwargs.items() if not key.startswith("_")}
    fixed["job_id"] = world.kwargs["_countdown"]
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fixed.items()))
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(config),
        "run",
        f"{live_server.url}/api/v1/schema/",
        "--url", live_server.url,
        "--header", f"Authorization: Token {token}",
        "--checks", CHECKS,
        "--max-examples", os.environ.get("ARPAD_SCHEMATHESIS_EXAMPLES", "8"),
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--exclude-method", "DELETE",
        "--seed", "1",
        "--no-color",
        "--generation-database", "none",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=840)
    report.write_text(done.stdout + done.stderr)
    print(done.stdout[-3000:])
    assert done.returncode == 0, (done.stdout + done.stderr)[-12000:]
