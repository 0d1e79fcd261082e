#!/usr/bin/env bash
# Set up a fresh machine for the tests (Chromium from apt, Python packages from pip), then run them.
# Arguments go to pytest, e.g. `bash tests/run.sh tests/test_models.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r requirements.txt -r tests/requirements.txt
if [ ! -f ../shared/data/cifar-10-mini/cifar-10-batches-py/test_batch ]; then
  echo "note: the CIFAR-10 mini subset is missing at $(cd .. && pwd)/shared/data/cifar-10-mini;" \
       "the tests that train and predict on real images will fail until it is there" >&2
fi
# Two workers share the two cores, torch on one thread in each (OMP_NUM_THREADS, which the training processes
# they start inherit). The browser tests go first, all to one worker and one at a time (conftest puts them in one
# xdist group): Chromium and the app's server keep to their timeouts beside one worker, while the other worker
# takes the rest; the browser worker joins it when they are done.
OMP_NUM_THREADS=1 exec python3 -m pytest -n 2 --dist loadgroup "$@"
