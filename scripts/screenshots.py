"""Screenshots of a real run's pages for the manual and the README, rendered in headless Chromium.

    .venv/bin/python scripts/screenshots.py            # the default run (artifacts/) -> docs/img/
    .venv/bin/python scripts/screenshots.py --artifacts /tmp/run/artifacts --out /tmp/shots --width 1440

Writes three PNGs into --out, each --width pixels wide:

  attributions.png  <artifacts>/explain/attributions.html: the probe texts with their tokens coloured
                    by each attribution method, from their heading down: the whole texts that
                    fit in --height pixels
  drift_report.png  <artifacts>/drift/report.html: Evidently's verdict, counts and per-column drift
                    table, down to the table's end (else --height pixels from the top)
  mlflow_run.png    the MLflow UI's page of the train run (<artifacts>/train/run.json), one viewport

For the last one the script starts its own `mlflow ui` on a free port of 127.0.0.1 against the run's
tracking store: the default config's tracking.uri with paths.root the folder above --artifacts
(sqlite:///<root>/mlflow.db), or --tracking-uri. It is stopped by its PID once the page is taken, on
an error too. A tracking server (http(s)://) is shown as it is, without starting anything.

Each page is taken once it has drawn: its load event, the part it is for present, the DOM quiet for
a second. Needs a finished run (`make run`) and Debian's chromium (`make browser`), driven over the
DevTools protocol by tests/integration/browser.py, as the report-rendering tests drive it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the browser driver lives with the tests that check the same pages

from tests.integration.browser import BrowserError, Page, open_page  # noqa: E402
from tests.integration.servers import ServerError, free_port, stop_group, wait_healthy  # noqa: E402

BIN = Path(sys.executable).parent
RUN_FIRST = "run `make run` first"
# The DOM counts as drawn once it has not changed for QUIET_MS (Evidently's React app and plotly
# draw after the load event, MLflow's UI after its API calls answer); MAX_WAIT_MS caps pages that
# never go quiet (a spinner). Both well under the driver's 60 s answer timeout.
QUIET_MS, MAX_WAIT_MS = 1000, 20000
# How long a page may take to show what it is for (MLflow's UI loads megabytes of script first).
READY_TIMEOUT_S = 60
# What is left after the quiet: an animation's last frames (MLflow's panels slide in).
SETTLE_MS = 500
# A screenshot over this many bytes is stored with a palette of 256 colours; text and flat UI
# colours survive that, and it keeps each image a few hundred KB at most.
PNG_BUDGET = 300_000
SERVER_TIMEOUT_S = 120
# A region taller than this is cut: a page measured wrong should not make a poster.
MAX_HEIGHT = 4000


class ScreenshotError(Exception):
    """Something the user can fix: a missing run, a store without the run, a server that did not start."""


@dataclass(frozen=True)
class Shot:
    """One screenshot: ``name`` under --out, of ``url``, taken once ``ready`` (a JavaScript expression)
    is true and the page has gone quiet. ``region``, an expression giving ``[top, bottom]`` in page
    pixels (or null), is the part worth showing; without it, one viewport from the page's top."""

    name: str
    what: str
    url: str
    ready: str
    region: str = "null"
    init: str = ""  # a script run before the page's own (see open_page)


# The attributions page opens with tables and plots; what is its own is further down: the probe
# texts, their tokens coloured by each method's attributions. From their heading (the h2 before the
# first text) down, as many whole texts as one viewport holds.
TOKENS = "document.querySelector('.item .tok') !== null"
ATTRIBUTIONS_REGION = """(() => {
  let e = document.querySelector('.item');
  while (e && e.tagName !== 'H2') e = e.previousElementSibling;
  if (!e) return null;
  const top = e.getBoundingClientRect().top + scrollY - 16;
  const ends = [...document.querySelectorAll('.item')].map(item => item.getBoundingClientRect().bottom + scrollY + 12);
  const whole = ends.filter(end => end <= top + innerHeight);
  return [top, whole.length ? Math.max(...whole) : top + innerHeight];
})()"""
# Evidently's verdict, its counts and the per-column drift table, down to the end of the table's card
# (a viewport from the top would cut the table). Its React app draws the table after the load event.
TABLE = "document.querySelector('table') !== null"
DRIFT_REGION = """(() => {
  const card = document.querySelector('table')?.closest('.MuiCardContent-root')?.parentElement;
  return card ? [0, card.getBoundingClientRect().bottom + scrollY + 4] : null;
})()"""

# The MLflow UI as someone who has used it would show it: the "Model training" side (a new browser
# profile gets GenAI's), and the assistant's chat panel closed, not opened over half the run page on
# a first visit. These are the UI's own localStorage settings (mlflow/server/js, useLocalStorage:
# key + "_v" + version, JSON values).
MLFLOW_UI_STATE = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
# Asked by the UI for its login; without MLflow's basic-auth app there is none, so 404 is its answer.
NO_LOGIN = "/ajax-api/2.0/mlflow/users/current"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.monotonic()
    try:
        artifacts = (args.artifacts or _default_artifacts()).resolve()
        attributions = _needed(artifacts / "explain" / "attributions.html")
        drift = _needed(artifacts / "drift" / "report.html")
        run_id = _run_id(_needed(artifacts / "train" / "run.json"))
        uri = args.tracking_uri or _tracking_uri(artifacts.parent)
        print(f"run {run_id}: artifacts {artifacts}, tracking store {uri}", flush=True)
        experiment_id = _experiment_id(uri, run_id)
        out = args.out.resolve()
        size = (args.width, args.height)
        pages = [
            Shot("attributions.png", "token attributions", attributions.as_uri(), TOKENS, ATTRIBUTIONS_REGION),
            Shot("drift_report.png", "Evidently's drift report", drift.as_uri(), TABLE, DRIFT_REGION),
        ]
        with tempfile.TemporaryDirectory(prefix="glasswork-shots-") as scratch, mlflow_ui(uri, Path(scratch)) as ui:
            # The server starts (tens of seconds) while the run's own pages are taken.
            profile = Path(scratch) / "profile"
            for shot in pages:
                shoot(shot, out, size, profile)
            url = f"{ui.ready()}/#/experiments/{experiment_id}/runs/{run_id}"
            # The run's id is on its page once MLflow's API calls have answered.
            ready = f"document.body.innerText.includes({run_id!r})"
            shoot(
                Shot("mlflow_run.png", "the MLflow UI's run page", url, ready, init=MLFLOW_UI_STATE), out, size, profile
            )
    except (ScreenshotError, BrowserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"done in {time.monotonic() - started:.0f} s: {out}", flush=True)
    return 0


def shoot(shot: Shot, out: Path, size: tuple[int, int], profile: Path) -> Path:
    """Render ``shot.url`` in a ``size`` viewport, wait until it has drawn, and write ``out/shot.name``:
    the shot's region (else one viewport from the top), cut where the page ends, as an optimised PNG."""
    began = time.monotonic()
    width, height = size
    print(f"{shot.name}: rendering {shot.what} ({shot.url})", flush=True)
    with open_page(shot.url, profile, width, height, shot.init) as tab:
        tab.send("Emulation.setScrollbarsHidden", hidden=True)  # a scrollbar is not the page's content
        _wait_until(tab, shot.ready, shot.url)
        tab.evaluate(_QUIET_JS)
        tab.wait(SETTLE_MS)
        top, bottom = tab.evaluate(shot.region) or (0, height)
        end = tab.evaluate(_PAGE_END_JS)
        top = max(0, min(int(top), int(end) - 1))
        bottom = max(top + 1, min(int(bottom), int(end), top + MAX_HEIGHT))
        clip = {"x": 0, "y": top, "width": width, "height": bottom - top, "scale": 1}
        # Beyond the viewport Chromium grows it for the capture; a page that fills the window
        # (MLflow's) is taken as it is shown.
        png = tab.screenshot(clip=clip, captureBeyondViewport=bottom > height)
        errors = [error for error in tab.errors if NO_LOGIN not in error]
    for error in errors:  # worth a look, but a page that drew is still a screenshot
        print(f"{shot.name}: the page reported: {error}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / shot.name
    path.write_bytes(optimised(png))
    shown = Image.open(path)
    print(
        f"{shot.name}: wrote {path} ({shown.width}x{shown.height}, {path.stat().st_size // 1024} KB)"
        f" in {time.monotonic() - began:.1f} s",
        flush=True,
    )
    return path


# Where the page ends: its scroll height, which is the viewport's at least, so for a page shorter than
# the viewport the bottom of its body (and the body's margin).
_PAGE_END_JS = """(() => {
  const page = document.documentElement.scrollHeight;
  if (page > innerHeight) return page;
  const margin = parseFloat(getComputedStyle(document.body).marginBottom) || 0;
  const body = document.body.getBoundingClientRect().bottom + scrollY + margin;
  return body > 0 ? Math.ceil(body) : page;
})()"""
# Resolves once the DOM has not changed for QUIET_MS (or after MAX_WAIT_MS), web fonts loaded,
# and two more frames drawn, so the screenshot is not of a half-drawn page.
_QUIET_JS = f"""
(async () => {{
  await document.fonts.ready;
  await new Promise(done => {{
    let quiet;
    const finish = () => {{ observer.disconnect(); clearTimeout(quiet); clearTimeout(cap); done(); }};
    const observer = new MutationObserver(() => {{ clearTimeout(quiet); quiet = setTimeout(finish, {QUIET_MS}); }});
    const cap = setTimeout(finish, {MAX_WAIT_MS});
    quiet = setTimeout(finish, {QUIET_MS});
    observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
  }});
  for (let i = 0; i < 2; i++) await new Promise(requestAnimationFrame);
}})()
"""


def _wait_until(tab: Page, expression: str, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not tab.evaluate(f"Boolean({expression})"):
        if time.monotonic() > deadline:
            raise ScreenshotError(f"{url} did not draw within {timeout_s:.0f} s (waited for {expression})")
        tab.wait(250)


def optimised(png: bytes) -> bytes:
    """``png`` re-encoded at PNG's best compression: with a palette when the page has 256 colours or
    fewer (lossless then), or when the full-colour image is over ``PNG_BUDGET`` bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.getcolors(256) is not None:
        return _encode(image.quantize(colors=256, dither=Image.Dither.NONE))
    full = _encode(image)
    if len(full) <= PNG_BUDGET:
        return full
    return _encode(image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _needed(path: Path) -> Path:
    if not path.is_file():
        raise ScreenshotError(f"{path} is missing: {RUN_FIRST} (or name the run's folder with --artifacts)")
    return path


def _run_id(record: Path) -> str:
    return str(json.loads(record.read_text(encoding="utf-8"))["run_id"])


def _tracking_uri(root: Path) -> str:
    """The default config's tracking store for a run whose ``paths.root`` is ``root``."""
    from glasswork.config import load_config
    from glasswork.tracking import absolute

    return absolute(str(load_config([f"paths.root={root}"]).tracking.uri))


def _experiment_id(uri: str, run_id: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store here and then not find the run.
        raise ScreenshotError(f"{uri.removeprefix('sqlite:///')} is missing: {RUN_FIRST} (or pass --tracking-uri)")
    try:
        return MlflowClient(uri).get_run(run_id).info.experiment_id
    except MlflowException as err:
        raise ScreenshotError(f"run {run_id} (train/run.json) is not in the tracking store {uri}: {err}") from None


class _Ui:
    """An MLflow UI being started: :meth:`ready` waits until it answers and gives its base URL."""

    def __init__(self, base: str, server: subprocess.Popen | None = None, log: Path | None = None):
        self.base, self.server, self.log = base, server, log
        self.started = time.monotonic()

    def ready(self) -> str:
        if self.server is not None:
            left = SERVER_TIMEOUT_S - (time.monotonic() - self.started)
            try:
                wait_healthy(self.base, self.server, "mlflow ui", max(left, 1.0), log_path=self.log, poll_s=0.5)
            except ServerError as err:
                raise ScreenshotError(str(err)) from None
            print(f"mlflow ui: answering, {time.monotonic() - self.started:.1f} s after its start", flush=True)
        return self.base


@contextmanager
def mlflow_ui(uri: str, scratch: Path) -> Iterator[_Ui]:
    """An MLflow UI on ``uri``: a tracking server as it is, else an `mlflow ui` started here on a free
    port of 127.0.0.1 and stopped (its process group, by its PID) on leaving, an error included."""
    if uri.startswith(("http://", "https://")):
        yield _Ui(uri.rstrip("/"))
        return
    port = free_port()
    log_path = scratch / "mlflow-ui.log"
    command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    # Nothing leaves the machine for a screenshot: MLflow's usage telemetry is off (server and UI).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    print(f"mlflow ui: starting on 127.0.0.1:{port} ({uri})", flush=True)
    with open(log_path, "w") as log:
        # Its own session (process group): the server's workers go with it. Its folder is the
        # scratch one, where MLflow's default ./mlartifacts would land, not the caller's.
        server = subprocess.Popen(
            command, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield _Ui(f"http://127.0.0.1:{port}", server, log_path)
        finally:
            stop_group(server, timeout=20)
            print(f"mlflow ui: stopped (pid {server.pid})", flush=True)


def _default_artifacts() -> Path:
    """The default run's artifacts: ``paths.artifacts_dir`` of the default config (``artifacts/``
    for the text task), a relative one taken from the repository root, where `make run` runs."""
    from glasswork.config import load_config

    folder = Path(str(load_config().paths.artifacts_dir))
    return folder if folder.is_absolute() else REPO / folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/screenshots.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="the run's artifacts folder (default: the default config's paths.artifacts_dir, artifacts/ in the "
        "repository for the text task)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go (default: docs/img/ of the repo)"
    )
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default: 1280)")
    parser.add_argument(
        "--height",
        type=int,
        default=900,
        help="viewport height (default: 900): the height of the attributions and MLflow shots; a page shorter "
        "than that is cut to its own height",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="the MLflow store holding the run (default: the default config's tracking.uri with paths.root the "
        "folder above --artifacts, i.e. sqlite:///<root>/mlflow.db)",
    )
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # A plain `kill` would end Python without its finally blocks; as an interrupt it stops the
    # MLflow server too.
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(main())
