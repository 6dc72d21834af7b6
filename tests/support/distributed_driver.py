"""What tests/test_distributed.py runs under torchrun (and, for its references, in its own
process): main.py's training steps on fixed batches, or main.py itself with a process killed.

    torchrun … distributed_driver.py steps OUT FEATURES LABELS NORM CACHE
    torchrun … distributed_driver.py main OUT KILL_RANK KILL_AT_STEP -- <main.py flags>
    RANK=r WORLD_SIZE=2 … distributed_driver.py blocked RESUME_FILE   (both ranks, without torchrun)
"""
import contextlib
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
BATCH = 2
TRAIN_TURNS = 5     # 3 joint steps: batches of 2, 2 and 1 turns (the last shared unevenly: 1 and 0)
POOL_TURNS = 3      # the unsupervised stage (-unlabel 3): batches of 2 and 1 turns
VAL_TURNS = 2       # one validation batch
CONFIGS = [(mt, POOL_TURNS if mt == "Temp-CNN" else 0) for mt in TEMPORAL_TYPES]


def config_name(mt, unlabel):
    return f"steps_{mt}_unlabel{unlabel}_float64"


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


def run_steps(out_dir, features, labels, norm_dir, cache_dir, settings):
    """Each config's steps (steps_of), in float64; rank 0 saves them."""
    norm = load_norm_term(norm_dir, ("Act",))
    with distributed.main_first(settings):
        split = LabelledTurns("Train", labels, features, norm, "Act", cache_dir, build_cache=settings.is_main)
        val = LabelledTurns("Validation", labels, features, norm, "Act", cache_dir, build_cache=settings.is_main)
        caches = [ChunkCache.open_or_build(cache_dir, name, [os.path.join(features, f) for f in files],
                                           norm["feat_mean"], norm["feat_std"], build=settings.is_main)
                  for name, files in ((f"Train{TRAIN_TURNS}", split.cache.meta["files"][:TRAIN_TURNS]),
                                      (f"Validation{VAL_TURNS}", val.cache.meta["files"][:VAL_TURNS]),
                                      (f"Pool{POOL_TURNS}", split.cache.meta["files"][-POOL_TURNS:]))]
    train, val_cache, pool = caches
    val = Turns(val_cache, val.norm_labels[:VAL_TURNS])
    with in_float64(caches):
        for mt, unlabel in CONFIGS:
            save(settings, steps_of(mt, unlabel, train, split.norm_labels[:TRAIN_TURNS], val, pool, settings),
                 out_dir, config_name(mt, unlabel))


def save(settings, result, out_dir, name):
    if settings.is_main:
        torch.save(result, os.path.join(out_dir, name + ".pt"))


def steps_of(mt, unlabel, train, labels, val, pool, settings):
    """One config in float64 with dropout off: [the unsupervised stage over the pool (its chunk
    features, k-means, sampling and steps),] 3 joint steps on pseudo-labels drawn from a seeded
    generator, a validation pass. The parameters and buffers after, the assignments, the turns
    drawn and the losses."""
    torch.manual_seed(SEED)
    model = without_dropout(build_model(mt, K).double())
    if settings.distributed:
        distributed.use_global_batchnorm(model)
    model.remove_cluster_head()
    optimizers = train_main.make_optimizers(model)
    rng = np.random.default_rng(SEED)
    triplet_gen = torch.Generator().manual_seed(SEED) if mt == "Temp-Triplet" else None
    result = {"unsup_loss": None, "pool_assignment": None}
    if unlabel:
        args = SimpleNamespace(batch_size=BATCH, num_clusters=K)
        with recorded_assignment(result, "pool_assignment"):
            result["unsup_loss"] = train_main.unsupervised_stage(model, pool, optimizers, args, settings, rng,
                                                                 triplet_gen, 0)
    assignment = rng.integers(0, K, len(train) * CHUNKS_PER_TURN)
    drawn = sentence_uniform_sample(assignment, K, rng)
    model.restore_cluster_head()
    result["loss"] = train_main.train_one_epoch(model, train, drawn, assignment, optimizers, BATCH, settings,
                                                labels, triplet_gen)
    result["val_loss"] = train_main.validate(model, val, BATCH, settings, rng)
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


def steps(argv):
    settings = distributed.setup("cpu", "fp32")
    try:
        run_steps(*argv, settings)
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
