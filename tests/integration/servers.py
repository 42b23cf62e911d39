"""Servers started for a test or a script on 127.0.0.1: a free port, waiting for ``/health``, and
stopping the server's whole process group by its PID. Shared by the integration tests' fixtures
(Prefect, MLflow) and scripts/screenshots.py (the MLflow UI), so each waits and stops the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


class ServerError(RuntimeError):
    """A server exited or did not answer in time; the message ends with its log's last lines."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path is not None and path.is_file() else ""


def wait_healthy(
    url: str, proc: subprocess.Popen, name: str, timeout_s: float, log_path: Path | None = None, poll_s: float = 1.0
) -> float:
    """Polls ``url/health`` until it answers 200 and returns the seconds it took; raises
    :class:`ServerError` naming ``name`` if the process exits first or ``timeout_s`` passes."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with code {proc.returncode}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - began
        except OSError:  # not listening yet (refused), or busy starting (timed out)
            pass
        time.sleep(poll_s)
    raise ServerError(f"{name} did not answer on {url} within {timeout_s:g} s:\n{log_tail(log_path)}")


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group started for ``proc`` (``start_new_session=True``: the server's
    workers go with it), SIGKILL if it outlives ``timeout``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:  # the group is gone already: only the exit status is left to collect
        proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
