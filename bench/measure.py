"""Timing primitives: one warm-up then timed repeats, medians as rates, device sync, the log."""
import statistics
import sys
import time

import torch


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats, device, setup=None):
    """One warm-up call, then `repeats` timed calls; returns the list of seconds.

    `setup` (untimed) runs before every call, e.g. to empty a cache folder.
    """
    times = []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return times


def rate(work, times):
    """Work per second of the median time, and the per-repeat rates."""
    return work / statistics.median(times), [work / t for t in times]
