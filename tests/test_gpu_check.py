"""bench/gpu_check.py, the check anyone with a GPU runs: it runs the real loop and judges each build the same way."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import THREADS

REPO = Path(__file__).resolve().parent.parent


def test_it_trains_each_build_and_prints_a_verdict_per_row(mini_dir):
    """A small CPU run of the script: its table has a row per build and mode, with the first loss at ln 10."""
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--data", str(mini_dir),
                           "--variants", "cifar", "--norms", "bn,none", "--modes", "eager", "--epochs", "1",
                           "--max-train-images", "256", "--batch-size", "64", "--threads", str(THREADS)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| cifar +\| (bn|none) ", line)]
    assert len(rows) == 2, done.stdout + done.stderr
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "eager" and abs(float(cells[3]) - 2.303) < 0.01, row
        assert cells[-1], row  # "learns", or what it did not do
    # One epoch of 4 steps does not learn: the script says so and fails, as it must on a GPU that does not learn.
    assert done.returncode == (0 if all(r.rstrip(" |").endswith("learns") for r in rows) else 1), done.stdout


def test_a_build_that_starts_confident_or_dies_is_reported():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from gpu_check import Row
    finally:
        sys.path.remove(str(REPO / "bench"))
    good = Row("paper", "bn", "eager", first_loss=2.303, last_loss=1.4, test_acc=0.45)
    assert good.problems(0.1) == []
    assert "not within ln 10" in Row("paper", "bn", "eager", 4.36, 1.4, test_acc=0.45).problems(0.1)[0]
    assert "not below" in Row("paper", "bn", "eager", 2.303, 2.302, test_acc=0.45).problems(0.1)[0]
    assert "not above chance" in Row("paper", "bn", "eager", 2.303, 1.4, test_acc=0.11).problems(0.1)[0]
    assert Row("paper", "bn", "compiled", note="failed: RuntimeError: x").problems(0.1) == ["failed: RuntimeError: x"]
    assert Row("imagenet", "none", "eager", note="skipped: no ImageNet weights").problems(0.1) == []
