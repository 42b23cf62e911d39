"""A real `prefect server` on 127.0.0.1 for the integration tests, stopped by its PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tests.integration.servers import free_port, stop_group, wait_healthy

BIN = Path(sys.executable).parent


def flow_runs(url: str) -> list[dict]:
    """Every flow run the server knows."""
    query = urllib.request.Request(f"{url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(query, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture
def prefect_server(tmp_path):
    """``(api_url, env)`` of a fresh server with its own PREFECT_HOME."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "prefect-server.log", "w")  # noqa: SIM115 - closed below
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc, "prefect server", timeout_s=120, log_path=tmp_path / "prefect-server.log")
        yield url, env
    finally:
        stop_group(proc)
        log.close()
