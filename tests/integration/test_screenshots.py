"""scripts/screenshots.py's capture on tiny local pages (the real run's pages are its job, not a
test's): it waits for what a page draws after its load event, takes the region asked for, cuts a
short page to its height, and stores a small PNG. And it names what is missing before a run."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scripts.screenshots import Shot, main, shoot

# A page whose content arrives 300 ms after the load event, as Evidently's and MLflow's do, on a
# page 200 px tall: a dark block under a heading.
LATE = """<!doctype html><html><body style="margin:0;height:200px">
<h1 style="margin:0">Drawn late</h1>
<script>addEventListener('load', () => setTimeout(() => {
  const block = document.createElement('div');
  block.id = 'late';
  block.style = 'width:200px;height:100px;background:#123';
  document.body.append(block);
}, 300))</script>"""
# A long page with a red band at 1500-1600 px: the region asked for is [1450, 1650].
LONG = """<!doctype html><html><body style="margin:0">
<div style="height:1500px"></div><div style="height:100px;background:#d00"></div><div style="height:1500px"></div>"""


@pytest.mark.integration
def test_a_shot_waits_for_late_content_and_cuts_a_short_page(tmp_path):
    page = tmp_path / "late.html"
    page.write_text(LATE, encoding="utf-8")
    shot = Shot("late.png", "a late page", page.as_uri(), "document.getElementById('late') !== null")

    png = shoot(shot, tmp_path / "out", (400, 300), tmp_path / "profile")

    image = Image.open(png)
    assert (image.width, image.height) == (400, 200)  # the page's height, not the viewport's
    pixels = np.asarray(image.convert("RGB"))
    assert (np.abs(pixels[100, 100].astype(int) - [0x11, 0x22, 0x33]) <= 2).all()  # the late block is drawn
    assert image.mode == "P" and png.stat().st_size < 20_000  # a few flat colours: a palette PNG


@pytest.mark.integration
def test_a_shot_takes_its_region_beyond_the_viewport(tmp_path):
    page = tmp_path / "long.html"
    page.write_text(LONG, encoding="utf-8")
    shot = Shot("long.png", "a long page", page.as_uri(), "true", region="[1450, 1650]")

    png = shoot(shot, tmp_path / "out", (300, 400), tmp_path / "profile")

    pixels = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))
    assert pixels.shape == (200, 300, 3)
    red = (pixels[:, 150] == [0xDD, 0, 0]).all(axis=1)
    assert not red[:45].any() and red[55:145].all() and not red[155:].any()


def test_a_missing_run_is_named_with_what_to_do(tmp_path, capsys):
    assert main(["--artifacts", str(tmp_path / "artifacts"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "artifacts" / "explain" / "attributions.html") in err and "run `make run` first" in err
    assert not (tmp_path / "out").exists()
