"""Headless Chromium (Debian's package) driven over the DevTools protocol, for the tests that
render Glasswork's HTML pages: the console's errors, uncaught exceptions, the value of a few
JavaScript expressions after the page has loaded, and a screenshot. ``scripts/screenshots.py``
drives the same browser through :func:`open_page` for the manual's screenshots, so this module
needs no pytest: its failures are :class:`BrowserError` (an ``AssertionError``, so a test that
meets one fails as it did when they were raised as assertions).

The console is read through the protocol (``Runtime.consoleAPICalled``, ``Runtime.exceptionThrown``,
``Log.entryAdded``), not from Chromium's stderr, whose log format is not an interface.
https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from websockets.sync.client import ClientConnection, connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]
WIDTH, HEIGHT = 1200, 1600
# After the load event: plotly and Evidently's React app draw in later frames, and an <img>
# whose src fails fires onerror a moment later.
SETTLE_MS = 800
TIMEOUT_S = 60.0


class BrowserError(AssertionError):
    """Chromium is missing, did not start, or did not do what it was asked over DevTools."""


@dataclass
class Rendered:
    """What a page did in the browser.

    Attributes:
        pixels: The screenshot in grey levels (0 black, 255 white), ``HEIGHT`` x ``WIDTH``.
        errors: ``console.error`` calls, uncaught exceptions and error log entries (a failed
            resource load among them), one line each.
        values: Each expression asked for, evaluated after the page settled.
    """

    pixels: np.ndarray
    errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def blank(self) -> bool:
        """No drawing at all, or no dark pixels (no text was drawn)."""
        return bool(self.pixels.std() <= 5 or (self.pixels < 128).mean() <= 0.002)


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        raise BrowserError("Debian's chromium is not installed: `make test` installs it (make browser)")
    return found


def render(page: Path, profile: Path, expressions: Sequence[str] = ()) -> Rendered:
    """Load ``page`` (a file) in a fresh headless Chromium with its profile in ``profile``,
    evaluate ``expressions`` once it has settled, and take a screenshot."""
    with open_page(page.resolve().as_uri(), profile, WIDTH, HEIGHT) as tab:
        tab.wait(SETTLE_MS)
        values = {expression: tab.evaluate(expression) for expression in expressions}
        pixels = np.asarray(Image.open(io.BytesIO(tab.screenshot())).convert("L"))
        return Rendered(pixels, list(tab.errors), values)


@contextmanager
def open_page(url: str, profile: Path, width: int, height: int, init_script: str = "") -> Iterator[Page]:
    """A fresh headless Chromium (profile in ``profile``) showing ``url`` in a ``width`` x ``height``
    viewport, once the page's load event has fired; the browser is stopped on leaving.
    ``init_script`` runs in the page before its own scripts (to preset its ``localStorage``, say)."""
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's is stale
    browser = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with connect(_browser_url(profile, browser), max_size=None, open_timeout=TIMEOUT_S) as socket:
            tab = Page(socket)
            tab.open(url, width, height, init_script)
            yield tab
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


def _browser_url(profile: Path, browser: subprocess.Popen) -> str:
    """The browser's DevTools websocket, from the port file Chromium writes into its profile."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise BrowserError(f"chromium exited with code {browser.returncode} before opening its DevTools port")
        lines = port_file.read_text().split() if port_file.is_file() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    raise BrowserError(f"chromium wrote no {port_file} within {TIMEOUT_S:.0f} s")


class Page:
    """One page target over the browser's socket (a flat session: every command names it).

    Attributes:
        errors: What the page reported so far (see :attr:`Rendered.errors`).
    """

    def __init__(self, socket: ClientConnection):
        self.socket = socket
        self.next_id = 0
        self.session: str | None = None
        self.errors: list[str] = []
        self.loaded = False

    def open(self, url: str, width: int, height: int, init_script: str = "") -> None:
        """Navigate a new target to ``url`` and return once its load event has fired; ``init_script``
        runs in each document before the document's own scripts."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        if init_script:
            self.send("Page.addScriptToEvaluateOnNewDocument", source=init_script)
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + TIMEOUT_S
        while not self.loaded:
            self._handle(self._receive(deadline))

    def wait(self, ms: int) -> None:
        """Let the page run for ``ms`` milliseconds (its events are read meanwhile)."""
        self.evaluate(f"new Promise(done => setTimeout(done, {ms}))")

    def screenshot(self, **params: Any) -> bytes:
        """A PNG of the viewport (``Page.captureScreenshot``'s ``params``: a ``clip``, say)."""
        return base64.b64decode(self.send("Page.captureScreenshot", format="png", **params)["data"])

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def send(self, method: str, **params: Any) -> dict:
        """Send one command and return its result; events that arrive meanwhile are handled."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise BrowserError(f"DevTools {method} failed: {answer['error']}")
                return answer["result"]
            self._handle(answer)

    def _receive(self, deadline: float) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(f"no answer from chromium within {TIMEOUT_S:.0f} s")
        return json.loads(self.socket.recv(timeout=left))

    def _handle(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            words = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.errors.append(f"console.{params['type']}: {words}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"uncaught: {details.get('exception', {}).get('description', details['text'])}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
