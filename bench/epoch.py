"""One training epoch of main.py, stage by stage (method §6): the stage clock, the fast path's epoch
through main.py's own functions, and the accounting of stage seconds over limited and repeated epochs."""
import contextlib
import statistics
import time

import main as train_main
from bench.measure import sync
from utils import sentence_uniform_sample

EPOCH_STAGES = ("chunk features", "k-means", "sampling", "training", "validation")


class StageClock:
    """Seconds per named stage; the device is synchronised at both ends of each stage."""

    def __init__(self, device):
        self.device = device
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, stage):
        sync(self.device)
        t0 = time.perf_counter()
        yield
        sync(self.device)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def limit_turns(drawn, train_batches, batch):
    """The sampled turns the training stage runs over: all, or the first `train_batches` batches."""
    return drawn[:train_batches * batch] if train_batches else drawn


def cluster_and_sample(clock, model, chunk_features, n_clusters, rng, settings):
    """The stages before training, each on `clock`: `chunk_features()` with the cluster head off,
    k-means (the same faiss call in both designs, on `settings`' device), sentence-uniform
    sampling; the head then goes back on. Returns (chunk features, assignment, drawn turns)."""
    model.remove_cluster_head()
    with clock("chunk features"):
        feats = chunk_features()
    with clock("k-means"):
        assignment = train_main.cluster_chunks(feats, n_clusters, rng, settings)
    with clock("sampling"):
        drawn = sentence_uniform_sample(assignment, n_clusters, rng)
    model.restore_cluster_head()
    return feats, assignment, drawn


def epoch_result(clock, feats, assignment, drawn, turns, loss, val_loss):
    """What one timed epoch reports: stage seconds, sampled and trained turns, losses, the clustering."""
    return {"seconds": clock.seconds, "drawn": len(drawn), "trained": len(turns), "train_loss": loss,
            "val_loss": val_loss, "assignment": assignment, "turns": turns, "n_chunks": feats.shape[0]}


def fast_epoch(state, train, val, n_clusters, batch, settings, train_batches=0, warmup_batch=False):
    """One epoch (state.epoch) of main.py's loop (method §6 steps 1-7 and 9) through main.py's own
    functions, each stage timed, on the model and random streams of `state`
    (training_files.TrainingState). The model comes with the cluster head on or off; it leaves
    with it on.
    `warmup_batch`: one training batch first, timed apart ('training warm-up': compilation of
    a compiled encoder, first-call set-up), so the training stage is the steady state."""
    model = state.model
    clock = StageClock(settings.device)
    feats, assignment, drawn = cluster_and_sample(
        clock, model, lambda: train_main.compute_chunk_features(model, train.cache, batch, settings),
        n_clusters, state.rng, settings)
    turns = limit_turns(drawn, train_batches, batch)
    if warmup_batch:
        with clock("training warm-up"):
            train_main.train_one_epoch(state, train.cache, drawn[:batch], assignment, batch, settings,
                                       train.norm_labels)
    with clock("training"):
        loss = train_main.train_one_epoch(state, train.cache, turns, assignment, batch, settings,
                                          train.norm_labels)
    with clock("validation"):
        val_loss = train_main.validate(model, val, batch, settings, state.rng)
    return epoch_result(clock, feats, assignment, drawn, turns, loss, val_loss)


def epoch_accounting(seconds, drawn, trained):
    """Stage seconds of one epoch, the training stage extrapolated to the whole sampled epoch
    when it ran over fewer turns (`trained` of `drawn`); `total` is the sum of the stages."""
    factor = drawn / trained if trained else 1.0
    stages = {s: float(seconds[s]) for s in EPOCH_STAGES}
    stages["training"] *= factor
    return {"stages": stages, "total": sum(stages.values()),
            "measured": {s: float(seconds[s]) for s in EPOCH_STAGES},
            "measured_total": sum(float(seconds[s]) for s in EPOCH_STAGES),
            "drawn": int(drawn), "trained": int(trained), "limited": trained < drawn,
            "training_factor": factor}


def median_epoch(accounts):
    """The median of each stage over repeated epochs; `total` is the sum of those medians
    (so the stages add up to it), `samples` each repeat's own total."""
    stages = {s: statistics.median(a["stages"][s] for a in accounts) for s in EPOCH_STAGES}
    measured = {s: statistics.median(a["measured"][s] for a in accounts) for s in EPOCH_STAGES}
    first = accounts[0]
    return {"stages": stages, "total": sum(stages.values()), "measured": measured,
            "measured_total": sum(measured.values()), "samples": [a["total"] for a in accounts],
            "stage_samples": {s: [a["measured"][s] for a in accounts] for s in EPOCH_STAGES},
            "drawn": first["drawn"], "trained": first["trained"], "limited": first["limited"],
            "training_factor": first["training_factor"], "repeats": len(accounts)}
