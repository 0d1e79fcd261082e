"""Keep the memory a training process frees for its next step, instead of handing it back to the kernel.

glibc's malloc serves each block over its mmap threshold (at most 32 MB) with a fresh mmap and unmaps
it when the block is freed. The paper variant's fc6 weight is 151 MB, so every step frees and
allocates again its gradient, the weight-decay sum and the backward's temporaries of that size, and
the kernel zero-fills those pages anew each time. Measured on 2 CPU cores, 20 steps of the paper
variant at batch 10 (tests/test_recipes_learn.py's check): 4.1 million page faults and 7.9 s of
system time; with large blocks kept in the heap, 0.42 million and 1.1 s, the steps 2.4 times faster
(`python bench/allocator.py` measures it on this machine). The price is that the process keeps its
peak footprint until it ends, which a training process reaches in its first step anyway.

Set ALEXNET_KEEP_FREED_MEMORY=0 to leave malloc as it is. Other C libraries (macOS, Windows, musl)
are left alone.
"""
from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENV_VAR", "keep_freed_memory"]

ENV_VAR = "ALEXNET_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers in glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1             # give memory back only when 2 GB at the heap's top lie free


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep them when freed; True where it took effect.

    Process-wide and lasting: call it in a process that trains. Idempotent.
    """
    if os.environ.get(ENV_VAR, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
