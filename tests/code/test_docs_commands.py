"""The commands in the manual run: the shell and Python blocks of the getting-started page and of
each task page's "Quick start" are executed in a fresh folder, in order, on tiny settings (every
`glasswork` command gets `debug=fast` and its own `paths.root`), so the docs cannot drift from the
code. A block the reader should not run here (`make run`, a server) is fenced as `text` or
`console`, or preceded by a `<!-- skip -->` line."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from tests.conftest import REPO

from glasswork.cli import main

DOCS = REPO / "docs"
PAGES = ["getting-started.md", *sorted(f"tasks/{p.name}" for p in (DOCS / "tasks").glob("*.md"))]
FENCE = re.compile(r"(?P<skip><!-- skip -->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """The page's (language, code) blocks to run: bash/sh/shell and python, not skipped; on a task
    page only those of its "Quick start" section."""
    text = page.read_text(encoding="utf-8")
    if page.parent.name == "tasks":
        found = re.search(r"^## Quick start\s*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert found, f"{page.name} has no '## Quick start' section"
        text = found.group(1)
    blocks = []
    for match in FENCE.finditer(text):
        lang = match["lang"].lower()
        if match["skip"] or lang not in ("bash", "sh", "shell", "python"):
            continue
        blocks.append(("python" if lang == "python" else "bash", match["body"]))
    return blocks


def shell_commands(body: str) -> list[list[str]]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_the_block_reader_finds_what_a_page_asks_to_run(tmp_path):
    page = tmp_path / "tasks" / "demo.md"
    page.parent.mkdir()
    page.write_text(
        "# Demo\n\n```bash\nglasswork run  # before the quick start: not run\n```\n\n## Quick start\n\n"
        "```python\nopen('a.csv', 'w').write('x')\n```\n\n<!-- skip -->\n```bash\nmake run\n```\n\n"
        "```bash\nglasswork run task=demo \\\n  data.path=a.csv  # the file above\n```\n\n```text\nmake ui\n```\n\n"
        "## Next\n\n```bash\nglasswork monitor b.csv\n```\n",
        encoding="utf-8",
    )
    blocks = runnable_blocks(page)
    assert [lang for lang, _ in blocks] == ["python", "bash"]
    assert shell_commands(blocks[1][1]) == [["glasswork", "run", "task=demo", "data.path=a.csv"]]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_commands_of_the_manual_run(page, tmp_path, monkeypatch):
    blocks = runnable_blocks(DOCS / page)
    assert blocks, f"docs/{page} has nothing to run"
    monkeypatch.chdir(tmp_path)
    tiny = ["debug=fast", f"paths.root={tmp_path}"]
    for lang, body in blocks:
        if lang == "python":
            exec(compile(body, f"docs/{page}", "exec"), {"__name__": "__docs__"})  # noqa: S102 - the manual's own code
            continue
        for command in shell_commands(body):
            if command[0] == "glasswork":
                assert main([*command[1:], *tiny]) == 0, f"docs/{page}: {shlex.join(command)}"
            else:
                done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
                assert done.returncode == 0, f"docs/{page}: {shlex.join(command)}\n{done.stderr[-2000:]}"
