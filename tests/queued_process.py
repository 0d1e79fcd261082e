"""A process in one device's queue, for tests: `python tests/queued_process.py RUNS RUN DEVICE (hold | train)`.

It waits in the queue of DEVICE through `jobs.device_lock`, as `python -m alexnet train` does, then
either holds the device until the file `release` appears in the run's folder, or trains the run
(`train.train`, resuming its folder as a job does). The queue is keyed by the device's name alone,
so on a machine without GPUs `cuda:0` and `cuda:1` are two real queues whose runs train on the CPU:
the seam that lets a CPU test show runs on two devices at once. Prints nothing; the run folder
records what happened (`held.json`: the devices taken and when it held them).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet import jobs, queues  # noqa: E402
from alexnet.config import TrainConfig  # noqa: E402
from alexnet.runs import RunWriter, load_run  # noqa: E402
from alexnet.train import train  # noqa: E402


def main(root: str, name: str, device: str, mode: str) -> None:
    writer = RunWriter(Path(root) / name)
    with jobs.device_lock(root, writer, queues.Request((device,)), threading.Event()) as taken:
        began = time.time()
        if mode == "train":
            config = TrainConfig.from_dict(load_run(writer.path, with_metrics=False).config)
            train(config, writer.path, resume=True)
        else:
            while not (writer.path / "release").exists():
                time.sleep(0.05)
        (writer.path / "held.json").write_text(json.dumps({"taken": taken, "began": began, "ended": time.time()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
