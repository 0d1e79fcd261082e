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
# Two workers share the two cores for the tests that drive no browser, torch on one thread in each (OMP_NUM_THREADS,
# which the training processes they start inherit); then the browser tests, one at a time, as Chromium and the app's
# server need the machine to themselves to keep to their timeouts. pytest's status 5 says a pass selected no test
# (arguments that name only one kind); the script fails if either pass fails, or if neither ran a test.
status=0
OMP_NUM_THREADS=1 python3 -m pytest -n 2 -m "not browser" "$@" || status=$?
browser_status=0
python3 -m pytest -m browser "$@" || browser_status=$?
if [ "$status" -eq 5 ] && [ "$browser_status" -ne 5 ]; then status=0; fi
if [ "$status" -eq 0 ] && [ "$browser_status" -ne 5 ]; then status=$browser_status; fi
exit "$status"
