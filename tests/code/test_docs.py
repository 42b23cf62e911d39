"""The manual (docs/, mkdocs.yml): its generated settings reference is what conf/ and the step
list say, and it builds with every link, anchor and included file in place."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from tests.conftest import REPO


def docs_reference():
    """scripts/docs_reference.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "scripts" / "docs_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_settings_reference_is_what_the_config_generates(monkeypatch):
    monkeypatch.delenv("GLASSWORK_ROOT", raising=False)
    reference = docs_reference()
    committed = reference.PAGE.read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/reference/settings.md is stale: run `.venv/bin/python scripts/docs_reference.py` and commit it"
    )


def test_the_manual_builds_strictly(tmp_path):
    # --strict turns every warning into a failure: a broken link or anchor, a page missing from the
    # nav, a snippet (the settings reference, benchmarks/README.md) that is not there.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, not about us
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").is_file()
