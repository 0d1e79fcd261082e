"""The command line: every subcommand has help, and each one drives the library for real."""
import os
import re
import shlex
import subprocess
import sys
from dataclasses import fields

import pytest

from alexnet.cli import build_parser, experiment_command, experiment_plan, main
from alexnet.config import TrainConfig
from alexnet.experiment import ExperimentPlan
from alexnet.flags import field_comments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subcommands() -> list[str]:
    """The subcommands as the parser's usage line lists them ({train,runs,...}), so one added later is covered too."""
    (choices,) = re.findall(r"\{([a-z,-]+)\}", build_parser().format_usage())
    return choices.split(",")


def test_help_of_every_subcommand(capsys):
    commands = subcommands()
    assert {"train", "runs", "summary", "eval", "predict", "experiment", "download"} <= set(commands)
    # The entry point itself once, as a user runs it; each subcommand's help through the same main()
    out = subprocess.run([sys.executable, "-m", "alexnet", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m alexnet") and all(c in out.stdout for c in commands), out.stdout
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m alexnet {command}"), command


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


def test_every_field_is_a_flag_whose_help_is_the_fields_comment(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line a flag: argparse would wrap long comments at hyphens
    for command, cls in (("train", TrainConfig), ("experiment", ExperimentPlan)):
        comments = field_comments(cls)
        assert set(comments) == {f.name for f in fields(cls)}, f"{cls.__name__}: a field without a comment"
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert all(comment in out for comment in comments.values())
    assert "--recipe {tuned,same,own-rate,papers}" in out and "own-rate: each norm at its own learning rate" in out
    assert "--data DATA " in out and "--variant {" in out and "imagenet" not in out.split("--variant {")[1][:20]


def test_the_experiment_command_line_reads_back_as_the_plan_it_shows(tmp_path):
    plan = ExperimentPlan(variant="paper", seeds=2, first_seed=5, epochs=3, recipe="papers", batch_size=64,
                          max_train_images=512, data_dir=str(tmp_path / "a folder"), device="cpu", precision="fp32",
                          threads=1, log_every=2, search_steps=20)
    assert all(getattr(plan, f.name) != getattr(ExperimentPlan(), f.name) for f in fields(plan))  # every flag
    words = shlex.split(experiment_command(plan))
    assert words[:4] == ["python", "-m", "alexnet", "experiment"] and words[-1] == "--wait"
    assert experiment_plan(build_parser().parse_args(words[3:])) == plan
    assert experiment_command(ExperimentPlan()) == \
        "python -m alexnet experiment --variant cifar --seeds 3 --epochs 12 --recipe tuned --wait"
    assert experiment_plan(build_parser().parse_args(["experiment"])) == ExperimentPlan()
