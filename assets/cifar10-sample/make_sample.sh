#!/usr/bin/env bash
# Remake the embedded sample in assets/cifar10-sample/ with the project's own command line.
#
#   assets/cifar10-sample/make_sample.sh [DATA_DIR]   (run from anywhere; DATA_DIR defaults to ../shared/data/cifar-10-mini)
#
# Writes train.webp, test.webp and sample.json: the first 200 training and 100 test images of each
# class of DATA_DIR. From the mini subset it gives the shipped files again (same pixels, labels and
# indices; tests/test_data.py checks that). Takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m alexnet sample --from "${1:-../shared/data/cifar-10-mini}" --out assets/cifar10-sample \
    --train-per-class 200 --test-per-class 100
