"""The command line: every subcommand has help, and each one drives the library for real."""
import argparse
import os
import subprocess
import sys

import pytest

from alexnet.cli import build_parser, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subcommands() -> list[str]:
    """The subcommands as the parser knows them, so one added later is covered too."""
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_help_of_every_subcommand():
    commands = subcommands()
    assert {"train", "runs", "summary", "eval", "predict", "experiment", "download"} <= set(commands)
    for command in ([], *([c] for c in commands)):
        out = subprocess.run([sys.executable, "-m", "alexnet", *command, "--help"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(" ".join(["usage: python -m alexnet", *command])), out.stdout
        if not command:
            assert all(c in out.stdout for c in commands)  # the overview names each


def test_summary_prints_layers_and_totals(capsys):
    assert main(["summary", "paper", "--norm", "lrn"]) == 0
    out = capsys.readouterr().out
    assert "96x55x55" in out and "56,909,194" in out and "720,351,776" in out


def test_train_runs_eval_and_predict(mini_dir, tmp_path, capsys):
    runs = str(tmp_path)
    assert main(["--runs", runs, "train", "--name", "cli", "--data-dir", str(mini_dir), "--epochs", "1",
                 "--max-train-images", "256", "--batch-size", "64", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["--runs", runs, "runs"]) == 0
    listing = capsys.readouterr().out
    assert "cli" in listing and "finished" in listing
    assert main(["--runs", runs, "eval", "--run", "cli", "--data", str(mini_dir)]) == 0
    assert "on 1017 images of CIFAR-10 subset" in capsys.readouterr().out
    image = os.path.join(REPO, "assets", "examples", "chelsea.png")
    assert main(["--runs", runs, "predict", image, "--run", "cli", "--top", "2"]) == 0
    assert capsys.readouterr().out.count("%") == 2


def test_bad_input_gets_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["--runs", str(tmp_path), "train", "--batch-size", "0"]) == 2
    assert "batch size must be" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path), "train", "--resume", "../etc"]) == 2
    assert "invalid run name" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path), "train", "--data-dir", str(tmp_path / "none"), "--epochs", "1"]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--variant"])
