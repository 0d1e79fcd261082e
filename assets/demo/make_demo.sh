#!/usr/bin/env bash
# Remake the demo model in assets/demo/ with the project's own command line.
#
#   assets/demo/make_demo.sh [DATA_DIR]      (run from anywhere; DATA_DIR defaults to ../shared/data/cifar-10-mini)
#
# 1. trains the cifar variant with BN on DATA_DIR (SGD 0.05 one-cycle, crop + flip, 30 epochs, seed 0)
#    into a fresh temporary runs folder,
# 2. writes its weights in fp16 to assets/demo/demo-cifar-bn.safetensors (under 10 MB),
# 3. measures the test accuracy of that fp16 file with `python -m alexnet eval` and writes it to
#    assets/demo/eval.txt. Copy that line into MODEL_CARD.md: tests/test_predict.py checks them against each other.
# THREADS (default 1, as the shipped model was trained) sets the CPU threads; other counts may change the last digits.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR="${1:-../shared/data/cifar-10-mini}"
RUNS="${RUNS:-$(mktemp -d)}"   # the training run stays there (metrics, config) for a closer look
python -m alexnet --runs "$RUNS" train --name demo --quiet \
    --variant cifar --norm bn --init kaiming --optimizer sgd --lr 0.05 --schedule onecycle \
    --crop-padding 4 --flip --epochs 30 --seed 0 --device cpu --threads "${THREADS:-1}" \
    --data-dir "$DATA_DIR"
python -m alexnet.predict export-demo "$RUNS/demo/weights.safetensors"
python -m alexnet eval --weights assets/demo/demo-cifar-bn.safetensors --data "$DATA_DIR" | tee assets/demo/eval.txt
echo "training run: $RUNS/demo"
