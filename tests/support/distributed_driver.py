"""What tests/test_distributed.py (2 processes, gloo) and gpu_check.sh's check (f) (one process
per GPU, NCCL) run under torchrun, and, for their references, in their own process: main.py's
training steps on fixed batches, or main.py itself with a process killed.

    torchrun … distributed_driver.py steps OUT FEATURES LABELS NORM CACHE [DEVICE]
    torchrun … distributed_driver.py main OUT KILL_RANK KILL_AT_STEP -- <main.py flags>
    RANK=r WORLD_SIZE=2 … distributed_driver.py blocked RESUME_FILE   (both ranks, without torchrun)
"""
import contextlib
import json
import os
import signal
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from deepemocluster import distributed  # noqa: E402
import main as train_main  # noqa: E402
from dataloader import ChunkCache, LabelledTurns  # noqa: E402
from deepemocluster.features import load_norm_term  # noqa: E402
from model import build_model  # noqa: E402
from utils import CHUNKS_PER_TURN, TEMPORAL_TYPES, run_cli, sentence_uniform_sample  # noqa: E402

SEED = 5
K = 4
PROCESSES = 2       # tests/test_distributed.py's runs
STATE_TOLERANCE = 1e-6
LOSS_TOLERANCE = 1e-9


def sizes(processes):
    """The turns of the steps compared over N `processes`: batches of N turns; 3N - 1 training
    turns, so 3 joint steps of N, N and N - 1 turns, the last leaving the last process an empty
    share; an unlabelled pool of 2N - 1 turns (-unlabel: batches of N and N - 1); one
    validation batch of N turns."""
    return SimpleNamespace(batch=processes, train=3 * processes - 1, pool=2 * processes - 1, val=processes)


TRAIN_TURNS = sizes(PROCESSES).train     # 5: batches of 2, 2 and 1 turns (the last shared 1 and 0)
POOL_TURNS = sizes(PROCESSES).pool       # 3: batches of 2 and 1 turns
CONFIGS = [(mt, POOL_TURNS if mt == "Temp-CNN" else 0) for mt in TEMPORAL_TYPES]


def config_name(mt, unlabel):
    return f"steps_{mt}{'_unlabel' if unlabel else ''}_float64"


@contextlib.contextmanager
def in_float64(caches):
    """Run the model, the losses and BatchNorm in float64 inside the block (every `.float()`
    of the code gives float64; the caches give float64 chunks). The comparison of N processes with one is then
    exact to float64 rounding: in float32, the encoder's first blocks have gradients that
    BatchNorm's backward makes from nearly cancelling terms at initialisation, so rounding
    differences of 1e-7 between two summation orders become 1e-4–1e-3 of those gradients, and
    Adam turns sign flips of near-zero components into steps of its full learning rate."""
    to_float = torch.Tensor.float
    torch.Tensor.float = lambda self, *args, **kwargs: self.double()
    for cache in caches:
        cache.read = lambda indices, _read=cache.read: _read(indices).astype(np.float64)
    try:
        yield
    finally:
        torch.Tensor.float = to_float
        for cache in caches:
            del cache.read


def without_dropout(model):
    """Dropout off (every nn.Dropout and the Transformer's attention dropout), so that the steps
    of N processes and of one can be compared value for value."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    return model


class Turns(SimpleNamespace):
    """A chunk cache and its normalised labels, as main.validate() reads a split."""

    def __init__(self, cache, norm_labels):
        super().__init__(cache=cache, norm_labels=norm_labels)

    def __len__(self):
        return len(self.cache)


def run_steps(out_dir, features, labels, norm_dir, cache_dir, settings, processes=PROCESSES):
    """Each config's steps (steps_of) on the turns compared over `processes` processes, in
    float64; rank 0 saves them."""
    n = sizes(processes)
    norm = load_norm_term(norm_dir, ("Act",))
    with distributed.main_first(settings):
        split = LabelledTurns("Train", labels, features, norm, "Act", cache_dir, build_cache=settings.is_main)
        val = LabelledTurns("Validation", labels, features, norm, "Act", cache_dir, build_cache=settings.is_main)
        caches = [ChunkCache.open_or_build(cache_dir, name, [os.path.join(features, f) for f in files],
                                           norm["features"], build=settings.is_main)
                  for name, files in ((f"Train{n.train}", split.cache.meta["files"][:n.train]),
                                      (f"Validation{n.val}", val.cache.meta["files"][:n.val]),
                                      (f"Pool{n.pool}", split.cache.meta["files"][-n.pool:]))]
    train, val_cache, pool = caches
    val = Turns(val_cache, val.norm_labels[:n.val])
    with in_float64(caches):
        for mt, unlabel in CONFIGS:
            save(settings, steps_of(mt, unlabel, train, split.norm_labels[:n.train], val, pool, settings, n.batch),
                 out_dir, config_name(mt, unlabel))


def save(settings, result, out_dir, name):
    if settings.is_main:
        torch.save(result, os.path.join(out_dir, name + ".pt"))


def steps_of(mt, unlabel, train, labels, val, pool, settings, batch):
    """One config in float64 with dropout off, on the settings' device: [the unsupervised stage
    over the pool (its chunk features, k-means, sampling and steps),] 3 joint steps on
    pseudo-labels drawn from a seeded generator, a validation pass. The parameters and buffers
    after, the assignments, the turns drawn and the losses."""
    torch.manual_seed(SEED)
    model = without_dropout(build_model(mt, K).double()).to(settings.device)
    if settings.distributed:
        distributed.use_global_batchnorm(model)
    model.remove_cluster_head()
    state = train_main.fresh_state(model, SEED, mt)
    result = {"unsup_loss": None, "pool_assignment": None}
    if unlabel:
        args = SimpleNamespace(batch_size=batch, num_clusters=K)
        with recorded_assignment(result, "pool_assignment"):
            result["unsup_loss"] = train_main.unsupervised_stage(state, pool, args, settings)
    assignment = state.rng.integers(0, K, len(train) * CHUNKS_PER_TURN)
    drawn = sentence_uniform_sample(assignment, K, state.rng)
    model.restore_cluster_head()
    result["loss"] = train_main.train_one_epoch(state, train, drawn, assignment, batch, settings, labels)
    result["val_loss"] = train_main.validate(model, val, batch, settings, state.rng)
    result["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result["drawn"] = torch.from_numpy(drawn)
    return result


@contextlib.contextmanager
def recorded_assignment(result, key):
    """Keep the k-means assignment that main.cluster_chunks returns inside the block."""
    cluster = train_main.cluster_chunks

    def recording(*args, **kwargs):
        result[key] = torch.from_numpy(cluster(*args, **kwargs))
        return result[key].numpy()
    train_main.cluster_chunks = recording
    try:
        yield
    finally:
        train_main.cluster_chunks = cluster


def build_state(mt):
    """The parameters and buffers of a config's model before its steps."""
    torch.manual_seed(SEED)
    return build_model(mt, K).double().state_dict()


def assert_same_steps(one, many, mt, unlabel, n_train):
    """The steps of N processes (`many`, as run_steps saved them) are those of one (`one`): the
    same turns and assignments, losses within LOSS_TOLERANCE, every parameter and buffer within
    STATE_TOLERANCE (float64), and the steps did train. Returns the largest state difference."""
    assert torch.equal(one["drawn"], many["drawn"]), "different turns drawn"
    assert len(one["drawn"]) == n_train
    if unlabel:
        assert torch.equal(one["pool_assignment"], many["pool_assignment"]), "different k-means assignments"
        assert abs(many["unsup_loss"] - one["unsup_loss"]) <= LOSS_TOLERANCE, (many["unsup_loss"], one["unsup_loss"])
    for key in ("loss", "val_loss"):
        assert abs(many[key] - one[key]) <= LOSS_TOLERANCE, (key, many[key], one[key])
    assert set(one["state"]) == set(many["state"])
    largest = 0.0
    for key, want in one["state"].items():
        got = many["state"][key]
        assert got.dtype == want.dtype, key
        if want.is_floating_point():
            largest = max(largest, float((got - want).abs().max()))
            assert largest <= STATE_TOLERANCE, (key, largest)
        else:
            assert torch.equal(got, want), key                      # num_batches_tracked
    moved = float((one["state"]["cnn_features.0.weight"] - build_state(mt)["cnn_features.0.weight"]).abs().max())
    assert moved > 1e-4, "the steps did not train"
    return largest


@contextlib.contextmanager
def recorded_shares(out_dir, rank):
    """Write, for every batch this process read a share of, the batch's turns and the share's
    (shares_rank<R>.json): what shows a process with an empty share."""
    share = distributed.share
    taken = []

    def recording(span, settings):
        part = share(span, settings)
        taken.append([len(span), len(part)])
        return part
    distributed.share = recording
    try:
        yield
    finally:
        distributed.share = share
        with open(os.path.join(out_dir, f"shares_rank{rank}.json"), "w") as f:
            json.dump(taken, f)


def steps(argv):
    """Each config's steps on DEVICE (default cpu; under torchrun each process on its GPU)."""
    settings = distributed.setup(argv[5] if len(argv) > 5 else "cpu", "fp32")
    try:
        with recorded_shares(argv[0], settings.rank):
            run_steps(*argv[:5], settings, settings.world_size if settings.distributed else PROCESSES)
    finally:
        if settings.distributed:
            torch.distributed.destroy_process_group()


def main_with_a_kill(argv):
    """main.py's main(), recording which process builds a chunk cache; process KILL_RANK kills
    itself (SIGKILL) at its KILL_AT_STEP-th training step (counted over the run, from 1)."""
    out_dir, kill_rank, kill_at, flags = argv[0], int(argv[1]), int(argv[2]), argv[4:]
    rank = int(os.environ.get("RANK", "0"))
    build = ChunkCache.build.__func__

    def recorded_build(cls, path, *args, **kwargs):
        with open(os.path.join(out_dir, f"built_by_rank{rank}.txt"), "a") as f:
            f.write(os.path.basename(path) + "\n")
        return build(cls, path, *args, **kwargs)
    ChunkCache.build = classmethod(recorded_build)
    if rank == kill_rank:
        loss = train_main.global_batch_loss
        calls = []

        def killed_at_step(*args, **kwargs):
            calls.append(1)
            if len(calls) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(*args, **kwargs)
        train_main.global_batch_loss = killed_at_step
    run_cli(lambda: train_main.main(flags))


def blocked_in_a_collective(argv):
    """Inside stopping_cleanly, rank 0 waits in a gloo all_reduce that rank 1 never joins (in
    C++, where Python's signal handlers cannot run) and says so on standard output."""
    settings = distributed.setup("cpu", "fp32", "gloo", timeout_minutes=60)

    def run():
        with distributed.stopping_cleanly(settings, argv[0]):
            if settings.is_main:
                print("blocked", flush=True)
                torch.distributed.all_reduce(torch.ones(1))
            else:
                time.sleep(3600)
    run_cli(run)


if __name__ == "__main__":
    {"steps": steps, "main": main_with_a_kill, "blocked": blocked_in_a_collective}[sys.argv[1]](sys.argv[2:])
