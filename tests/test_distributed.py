"""`torchrun --nproc_per_node=2 -m alexnet train` with gloo on the CPU: records written once, same accuracy."""
import os
import subprocess
import sys

from alexnet.runs import load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = ["--epochs", "3", "--max-train-images", "2048", "--batch-size", "64", "--threads", "1", "--quiet",
          "--log-every", "4"]


def _train(runs, name, mini_dir, processes):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    done = subprocess.run([*launcher, "-m", "alexnet", "--runs", str(runs), "train", "--name", name,
                           "--data-dir", str(mini_dir), *RECIPE], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return load_run(runs / name)


def test_two_gloo_processes_train_like_one(mini_dir, tmp_path):
    one = _train(tmp_path, "one", mini_dir, 1)
    two = _train(tmp_path, "two", mini_dir, 2)
    assert two.state == "finished" and two.metrics[0]["processes"] == 2
    # Written once: every step and epoch appears a single time, in order
    assert [e["epoch"] for e in two.epochs()] == [1, 2, 3]
    steps = [e["global_step"] for e in two.steps()]
    assert steps == sorted(set(steps)) and steps[-1] == 3 * (2048 // 64)
    assert [e["global_step"] for e in one.steps()] == steps
    # Same global batch and schedule: the same accuracy within the noise of 1,017 test images
    a, b = one.result["test_accuracy"], two.result["test_accuracy"]
    assert a > 0.2 and b > 0.2, (a, b)
    assert abs(a - b) < 0.08, (a, b)
