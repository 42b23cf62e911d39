"""Each `dvc repro` stage is its own process: the steps after `train` must not pay for importing
Lightning (several seconds a stage on two cores) just to find the trained model."""

from __future__ import annotations

import subprocess
import sys

LATER_STEPS = ["evaluate", "explain.step", "drift", "registry", "monitor"]


def test_the_steps_after_training_do_not_import_lightning():
    imports = "; ".join(f"import glasswork.{name}" for name in LATER_STEPS)
    probe = f"import sys; {imports}; print(sorted(m for m in sys.modules if m.startswith('lightning')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
