"""The trainer keeps large freed blocks in the heap: a 150 MB block (the paper variant's fc6 gradient) freed and
allocated again costs no page faults, where glibc left as it is maps and zero-fills it anew each time."""
import json
import os
import subprocess
import sys

from alexnet import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CYCLES, BLOCK = 5, 150_000_000
PROBE = f"""
import json, resource
from alexnet.allocator import keep_freed_memory
kept = keep_freed_memory()
block = bytearray({BLOCK}); del block  # the first allocation faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({CYCLES}):
    block = bytearray({BLOCK}); del block
print(json.dumps({{"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


def probe(setting: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, allocator.ENV_VAR: setting})
    return json.loads(done.stdout)


def test_a_freed_large_block_is_reused_without_page_faults_and_the_setting_can_be_turned_off():
    kept, as_is = probe("1"), probe("0")
    assert kept["kept"] and not as_is["kept"]
    assert as_is["faults"] >= CYCLES, as_is               # glibc maps each block afresh: its pages fault again
    assert kept["faults"] * 20 < as_is["faults"], (kept, as_is)  # kept in the heap: the pages are already there
