#!/usr/bin/env bash
# Remake a shipped LRN-versus-BN experiment in assets/experiments/ with the project's own command line.
#
#   assets/experiments/make_shipped.sh [VARIANT] [DATA_DIR]   (run from anywhere; VARIANT defaults to cifar,
#                                                              DATA_DIR to ../shared/data/cifar-10-mini)
#
# 1. runs the experiment (the tuned recipe: one learning-rate range test per norm, then an LRN and a BN run for
#    each of 3 seeds, 12 epochs each) into a fresh temporary runs folder, on whatever device `auto` finds
#    (the cifar variant: about ten minutes on two CPU cores, run alone; the paper variant is a GPU job),
# 2. copies its records (the experiment's record and each run's config, status, metrics, result and environment;
#    never weights or resume state) into assets/experiments/lrn-vs-bn-VARIANT/ with `python -m alexnet.shipped`,
#    which refuses an experiment whose runs did not all finish, and prints the files' sizes.
# Commit the code first: each run records the checkout's git commit, marked when files differ from it.
set -euo pipefail
cd "$(dirname "$0")/../.."
VARIANT="${1:-cifar}"
DATA_DIR="${2:-../shared/data/cifar-10-mini}"
RUNS="${RUNS:-$(mktemp -d)}"   # the whole runs folder stays there (weights, range tests, logs) for a closer look
NAME="lrn-vs-bn-$VARIANT"
START=$(date +%s)
python -m alexnet --runs "$RUNS" experiment --name "$NAME" --variant "$VARIANT" --seeds 3 --epochs 12 \
    --data "$DATA_DIR" --wait
echo "wall time: $(( $(date +%s) - START )) s"
python -m alexnet.shipped "$RUNS" "$NAME"
echo "runs folder: $RUNS"
