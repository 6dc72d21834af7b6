"""Training on several GPUs or machines: torchrun, DistributedDataParallel, and the exchanges
that keep the method of one process (README, "Training on several GPUs or machines").

`-batch B` stays the global batch: every batch of B turns is split across the N processes, each
taking a contiguous share (np.array_split order, so the shares in rank order are the batch).
The losses are those of the whole batch: the CCC over the predictions gathered from every
process, cross-entropy and triplet loss as means over the whole batch, BatchNorm statistics over
the whole batch (GlobalBatchNorm2d). k-means runs once, on rank 0, and its assignment is shared;
every process keeps the same random streams, so all draw the same turns. Without torchrun none
of this runs: a plain `python main.py` has no process group.
"""
import contextlib
import os
import re
import signal
import sys
import threading
import time
import warnings
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from deepemocluster.compute import Settings, pick_device, single_process, use_bf16
from utils import ProcessError, UserError

BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_TIMEOUT_MINUTES = 10      # a collective waiting longer than this stops the run
CACHE_WAIT = timedelta(hours=6)   # how long the other processes wait for rank 0 to build a chunk cache
# NCCL's error handling, set before its process group starts. Blocking wait: each collective's
# wait() holds the CPU thread until the collective completes, and raises in Python (after
# aborting the communicator) once it fails or the timeout passes; no watchdog thread runs, whose
# handling (torch's default TORCH_NCCL_ASYNC_ERROR_HANDLING=3, torchrun's 1) takes the process
# down before Python can say how to resume. 2 (abort the communicator, keep the process) for a
# watchdog that runs all the same.
NCCL_ERROR_HANDLING = {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
# torchrun kills a process 30 s after its SIGTERM; a main thread blocked in C++ (a collective's
# wait, a CUDA synchronisation) cannot run Python's handler, so after this many seconds a
# watcher thread prints the process's message and ends it.
TERMINATION_GRACE_SECONDS = 10


def launched_by_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


# --- start and stop ---------------------------------------------------------------------
def setup(device="auto", precision="auto", backend="auto", timeout_minutes=DEFAULT_TIMEOUT_MINUTES):
    """The run's Settings; under torchrun, after joining its process group (one-line errors for
    settings that cannot work)."""
    if not launched_by_torchrun():
        return single_process(device, precision)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = process_device(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UserError("--dist-backend nccl runs on CUDA devices only; on the CPU use gloo (the "
                        "default there)")
    if device.type == "cuda":
        try:
            torch.cuda.set_device(device)
        except RuntimeError as err:
            raise UserError(f"process {rank} of {world} cannot use {device} ({first_line(err)})")
    if backend == "nccl":
        os.environ.update(NCCL_ERROR_HANDLING)
    try:
        # device_id: NCCL connects now (not at the first collective), so that its failures to
        # start are met here
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if backend == "nccl" else None)
        wait_group = dist.new_group(backend="gloo", timeout=CACHE_WAIT)
    except (RuntimeError, ValueError) as err:
        raise UserError(f"the {backend} backend could not start the process group of {world} "
                        f"processes ({first_line(err)}); check the network interface "
                        "(GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) and that every machine reaches "
                        "the rendezvous host")
    if rank != 0:
        warnings.filterwarnings("ignore")     # rank 0 shows the run's warnings once
    return Settings(device, precision, use_bf16(precision, device), rank, world, backend, wait_group)


def process_device(name, local_rank, local_world):
    """The device of one process: GPU LOCAL_RANK of its machine, or the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda:"):
        raise UserError(f"--device {name} names one GPU, but under torchrun each process takes "
                        "the GPU of its local rank: give --device cuda (or auto), and "
                        "CUDA_VISIBLE_DEVICES to choose the GPUs")
    device = pick_device(name)
    if device.type == "cuda" and local_world > torch.cuda.device_count():
        raise UserError(f"torchrun started {local_world} processes on this machine, which has "
                        f"{torch.cuda.device_count()} CUDA device(s): give --nproc_per_node "
                        f"{torch.cuda.device_count()} or fewer (one process per GPU), or --device cpu")
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def check_batch(batch_size, processes):
    if batch_size < processes:
        raise UserError(f"-batch {batch_size} is smaller than the {processes} processes "
                        "of this run: each batch is split across them, so every process needs "
                        f"a turn of each batch (-batch {processes} or more, or fewer "
                        "processes)")


class Terminated(Exception):
    """torchrun ended this process (SIGTERM), as it does when another process of the run died."""


def _terminated(signum, frame):
    raise Terminated()


class StopMessage:
    """The one line a process prints when its run stops under it, printed once: by the main
    thread (a ProcessError) or by the termination watcher, whichever takes it first."""

    def __init__(self, settings, resume_file):
        self.settings, self.resume_file = settings, resume_file
        self.lock, self.taken, self.shown = threading.Lock(), False, threading.Event()

    def take(self):
        """True for the first caller alone, which shows the message."""
        with self.lock:
            first, self.taken = not self.taken, True
        return first

    def text(self, why):
        then = (f"The last saved checkpoint is untouched; continue the run with the same command "
                f"and --resume (on any number of processes): {self.resume_file}"
                if os.path.exists(self.resume_file)
                else "No epoch had completed, so there is nothing to resume: run the same command again")
        return (f"process {self.settings.rank} of {self.settings.world_size}: training stopped ({why}); "
                f"if another process died (killed, out of memory), its output above says why. {then}")


TERMINATED = "torchrun stopped it"
WATCHER_DONE = 0     # the byte that ends the watcher (no signal has number 0)


@contextlib.contextmanager
def watching_for_termination(message):
    """Inside the block, torchrun's SIGTERM ends this process with its message even where the
    main thread is blocked in C++ and cannot run Python's handler: the C-level handler writes
    the signal's number to a pipe (signal.set_wakeup_fd), and a thread reading it gives the
    main thread TERMINATION_GRACE_SECONDS to stop by itself, then prints the message and
    ends the process (files are replaced through temporary names: one being written keeps its
    last version)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end)

    def watch():
        try:
            while True:
                got = os.read(read_end, 1)
                if not got or got[0] == WATCHER_DONE:
                    return
                if got[0] == signal.SIGTERM:
                    time.sleep(TERMINATION_GRACE_SECONDS)
                    if message.take():
                        sys.stdout.flush()
                        print(f"error: {message.text(TERMINATED)}", file=sys.stderr, flush=True)
                        message.shown.set()
                        os._exit(1)
                    return
        finally:
            os.close(read_end)

    threading.Thread(target=watch, name="termination watcher", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.write(write_end, bytes([WATCHER_DONE]))
        os.close(write_end)


@contextlib.contextmanager
def stopping_cleanly(settings, resume_file):
    """Under torchrun: turn the loss of another process (a failed collective, or torchrun's
    SIGTERM) into a one-line message that says how to resume; leave the process group after a
    run that ended well (after a failure the process ends without: shutting NCCL down with a
    peer lost may wait for it, and the message must come first)."""
    if not settings.distributed:
        yield
        return
    message = StopMessage(settings, resume_file)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        with watching_for_termination(message):
            yield
    except BaseException as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the process ends now; its message comes first
        if not stopped_by_the_run(err):
            raise
        if not message.take():                          # the watcher is showing it, then ends the process
            message.shown.wait(TERMINATION_GRACE_SECONDS)
            raise SystemExit(1)
        raise ProcessError(message.text(TERMINATED if isinstance(err, Terminated) else
                                        f"an exchange with the other processes failed: {first_line(err)}"))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dist.barrier()                  # every process done (rank 0 writes last) before any leaves the group
    dist.destroy_process_group()


def stopped_by_the_run(err):
    """torchrun's SIGTERM, or a collective that failed (another process is lost)."""
    return isinstance(err, Terminated) or (isinstance(err, RuntimeError) and collective_failure(err))


def collective_failure(err):
    text = str(err)
    return isinstance(err, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Connection"))


def first_line(err):
    """The gist of a backend's error: its first sentence, without the source location or
    NCCL's process-group prefix."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", line)
    line = re.sub(r"^\[(?:PG ID|Rank) [^\]]*\]\s*", "", line)
    line = re.sub(r"^[\w.>-]+ [!=<>]=? [\w.>-]+\.\s*", "", line)    # a failed C++ check, e.g. "ifa != nullptr."
    return line.split(". ")[0].rstrip(".")


# --- batches split across the processes --------------------------------------------------
def share(span, settings):
    """This process's contiguous share of the turns `span` of one global batch."""
    if not settings.distributed:
        return span
    return np.array_split(np.asarray(span), settings.world_size)[settings.rank]


def share_sizes(n_turns, settings):
    return [len(part) for part in np.array_split(np.arange(n_turns), settings.world_size)]


class _GatherRows(torch.autograd.Function):
    """all_gather of row blocks of different sizes, in rank order. Backward: the gradient of
    this process's rows, summed over every process's loss (an all_reduce)."""

    @staticmethod
    def forward(ctx, rows, sizes):
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        padded = rows.new_zeros((max(sizes),) + rows.shape[1:])   # all_gather needs equal sizes
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


def gather_rows(rows, sizes):
    """Every process's `rows` (sizes[r] rows on rank r) concatenated in rank order, on every
    process; differentiable. Without a process group, `rows` (one process)."""
    if not dist.is_initialized():
        return rows
    return _GatherRows.apply(rows.contiguous(), list(sizes))


def gather_turns(rows, n_turns, settings, rows_per_turn=1):
    """The rows of every process's share of a batch of `n_turns` turns (`rows_per_turn` rows
    per turn), in batch order, on every process; differentiable."""
    return gather_rows(rows, [n * rows_per_turn for n in share_sizes(n_turns, settings)])


def wait_for_gradients(settings):
    """Hold the CPU until the gradient all_reduce that DDP started in backward is done: a barrier
    queued behind it. DDP never waits for it on the CPU, and the next CUDA synchronisation would
    wait for it without a time limit (under NCCL's blocking wait no watchdog runs); the barrier's
    wait is the process group's, so a lost process raises here, in Python. Nothing in a plain run,
    nor under gloo, whose all_reduce DDP waits for at the end of backward."""
    if settings.backend == "nccl":
        dist.barrier()


def mean_over_processes(value):
    """The mean of a scalar tensor over the processes (for the log; no gradient)."""
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def broadcast_from_main(obj):
    """Rank 0's `obj` (a numpy array, a number), on every process."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first(settings):
    """Rank 0 runs the block first (it builds the chunk caches); the others wait for it at a
    barrier, then run the block (they open what it built)."""
    if not settings.distributed:
        yield
        return
    if not settings.is_main:
        dist.barrier(group=settings.wait_group)
    yield
    if settings.is_main:
        dist.barrier(group=settings.wait_group)


# --- the model in a distributed run ------------------------------------------------------
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: each process's
    per-channel count, mean and sum of squared deviations are gathered and combined (Chan's
    formula, float64), differentiably; the running statistics follow BatchNorm2d (momentum,
    unbiased variance over the global batch). Evaluation mode is BatchNorm2d's. The same
    parameters and buffers as BatchNorm2d, so checkpoints keep the released layout. (torch's
    SyncBatchNorm does the same but refuses CPU tensors; this one runs on GPUs and, with gloo,
    on the CPU, where the tests run it.)"""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        xf = x.float()
        count = xf.numel() // xf.shape[1]
        # The same operations on every process, also on one with no turn in this batch (zeros
        # then): the backward passes must run the same collectives in the same order.
        mean = xf.sum(dim=(0, 2, 3)) / max(count, 1)
        m2 = (xf - mean[None, :, None, None]).square().sum(dim=(0, 2, 3))
        local = torch.cat([xf.new_full((1,), float(count)), mean, m2]).double()
        stats = gather_rows(local[None], [1] * (dist.get_world_size() if dist.is_initialized() else 1))
        counts, means, m2s = stats[:, :1], stats[:, 1:1 + xf.shape[1]], stats[:, 1 + xf.shape[1]:]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        var = (m2s + counts * (means - mean).square()).sum(0) / n
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.float())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * (var * n / (n - 1)).float())
        scale = self.weight * torch.rsqrt(var.float() + self.eps)
        shift = self.bias - mean.float() * scale
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def use_global_batchnorm(model):
    """Replace every BatchNorm2d (the encoder's seven, Temp-CNN's two) by a GlobalBatchNorm2d
    holding the same parameters and buffers; before the optimisers are made."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.BatchNorm2d:
                bn = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
                bn.to(child.weight.device, child.weight.dtype).load_state_dict(child.state_dict())
                setattr(module, name, bn)
    return model


def wrap(model, settings):
    """The model under DistributedDataParallel for one training stage (made after the stage's
    changes to the model: a fresh cluster top layer, a frozen regression head), or the model
    itself in a plain run. Buffers are not broadcast: the running statistics are the same in
    every process by construction."""
    if not settings.distributed:
        return model
    ids = [settings.device.index] if settings.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


@contextlib.contextmanager
def dropout_stream(settings, *position):
    """Under torchrun, each process draws its own dropout masks, from a stream fixed by the
    seed, the process and `position` (epoch, stage, step), leaving the shared random stream
    untouched (it also initialises every epoch's cluster top layer, which must agree)."""
    if not settings.distributed:
        yield
        return
    seed = np.random.SeedSequence([torch.initial_seed(), settings.rank, *position]).generate_state(1)[0]
    devices = [settings.device.index] if settings.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
