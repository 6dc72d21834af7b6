"""What a training run writes (method §6 step 10, README "Flags"): the released checkpoint
name and its companions (TrainingFiles), the plots of its trends, and the state after each epoch
(TrainingState) that --resume continues from. main.py writes them (under torchrun, rank 0 alone)."""
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from model import canonical_state_dict, checkpoint_name, read_checkpoint, released_state_dict
from utils import UserError, atomic_path, save_json, save_npy, save_torch


# Each file of a run: its name is the checkpoint's with the suffix in place of ".pth.tar".
RUN_FILES = {"checkpoint": ".pth.tar", "resume": "_resume.pth.tar", "cluster_log": "_clusters.npy",
             "history": "_history.json", "nmi_val_plot": "_NMI_ValLoss.png",
             "train_plot": "_TrainLoss.png"}


class TrainingFiles:
    """Where one training run keeps its files: the released checkpoint name and its companions
    (an attribute per RUN_FILES key)."""

    def __init__(self, model_dir, epochs, batch_size, num_clusters, emo_attr, model_type, unlabel_size=0):
        name = checkpoint_name(epochs, batch_size, num_clusters, emo_attr, model_type, unlabel_size)
        self.stem = os.path.join(model_dir, name[:-len(".pth.tar")])
        for key, suffix in RUN_FILES.items():
            setattr(self, key, self.stem + suffix)

    @classmethod
    def from_args(cls, args):
        """The files of the run that main.py's flags describe."""
        return cls(args.model_dir, args.epochs, args.batch_size, args.num_clusters, args.emo_attr,
                   args.model_type, args.unlabel_size)

    def paths(self):
        return [getattr(self, key) for key in RUN_FILES]

    def check_not_taken(self, resume, overwrite):
        """Refuse to start over a checkpoint this run did not write: finished work
        (the shipped demo models, an earlier run) is never replaced without being asked."""
        if resume or overwrite or not os.path.exists(self.checkpoint):
            return
        hint = ("--resume to continue its interrupted training, " if os.path.exists(self.resume)
                else "")
        raise UserError(f"{self.checkpoint} already holds a checkpoint; not replacing it. Use "
                        f"{hint}--overwrite to train it again from scratch, or --model-dir DIR to "
                        "train into another folder")


# What the history holds for each epoch, in this order (ran_on: where_it_ran's record).
HISTORY_KEYS = ("train_loss", "unsup_loss", "val_loss", "nmi", "seconds", "ran_on")


def where_it_ran(settings, compiled):
    """Where and how an epoch ran, as the history records it for the sweep's results: the device
    (its type under torchrun), the precision, whether the encoder was compiled, and the processes
    and their backend (None for a plain run, not under torchrun)."""
    return {"device": settings.device.type if settings.distributed else str(settings.device),
            "precision": "bf16" if settings.bf16 else "fp32", "compiled": compiled,
            "processes": settings.world_size, "backend": settings.backend}


@dataclass
class TrainingState:
    """What a training run carries from epoch to epoch, saves after each (save_epoch_state) and
    --resume restores (resume_state): the model, its optimisers (SGD, Adam), the random streams
    (numpy's for the k-means seeds, sampling and validation order; torch's for the triplets, None
    but for Temp-Triplet), each epoch's history and clustering, and how far the run has come."""

    model: torch.nn.Module
    optimizers: tuple
    rng: np.random.Generator
    triplet_gen: torch.Generator = None
    history: dict = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})
    cluster_log: list = field(default_factory=list)
    epoch: int = 0                  # epochs completed: the 0-based index of the one under way
    best: float = float("inf")      # the lowest validation loss so far

    def end_epoch(self, **values):
        """Record the epoch under way in the history (a value per HISTORY_KEYS key); it is completed.
        A key the history lacks (one resumed from before the key existed) gets None for the
        epochs before."""
        for key, value in values.items():
            self.history.setdefault(key, [None] * self.epoch).append(value)
        self.epoch += 1


# --- method §6 step 10 -----------------------------------------------------------------
def saved_epoch(history):
    """The epoch (1-based) whose checkpoint was kept: the first with the lowest validation loss."""
    return int(np.argmin(history["val_loss"])) + 1


def epoch_axis(ax, n_epochs):
    """An x axis of whole epochs: ticks on epoch numbers only, half an epoch of margin each side."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, n_epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def plot_trends(history, files, title):
    """NMI and validation loss per epoch in one PNG, training loss in another; both name
    the run, mark the saved epoch and tick whole epochs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    best = saved_epoch(history)
    nmis = [np.nan if v is None else v for v in history["nmi"]]
    fig, ax1 = plt.subplots(figsize=(6.4, 4.2))
    ax1.plot(epochs, history["val_loss"], "s-", color="tab:red", label="validation CCC loss")
    epoch_axis(ax1, len(epochs))
    ax1.set_ylabel("validation CCC loss", color="tab:red")
    ax1.axvline(best, color="grey", linestyle=":", label=f"saved epoch ({best})")
    if np.isfinite(nmis).any():
        ax2 = ax1.twinx()
        ax2.plot(epochs, nmis, "o-", color="tab:blue", label="NMI t-1/t")
        ax2.set_ylabel("NMI between consecutive clusterings", color="tab:blue")
        subtitle = "Cluster stability (NMI) and validation loss"
    else:
        subtitle = "Validation loss (NMI needs two epochs)"
    ax1.legend(loc="best", fontsize=8)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, files.nmi_val_plot)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, history["train_loss"], "o-", label="supervised stage")
    if any(v is not None for v in history.get("unsup_loss", [])):
        ax.plot(epochs, [np.nan if v is None else v for v in history["unsup_loss"]], "^-",
                label="unsupervised stage")
    ax.axvline(best, color="grey", linestyle=":", label=f"saved epoch ({best})")
    epoch_axis(ax, len(epochs))
    ax.set_ylabel("training loss (mean over batches)")
    ax.legend(fontsize=8)
    fig.suptitle(f"{title}\nTraining loss", fontsize=10)
    fig.tight_layout()
    save_figure(fig, files.train_plot)
    plt.close("all")


def epoch_count(n):
    """'1 epoch', '2 epochs': a number of epochs as a phrase."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def run_title(args):
    """What a plot is of: model type, attribute, K, epochs (and the unlabelled turns)."""
    unlabel = f", {args.unlabel_size} unlabelled turns" if args.unlabel_size else ""
    return (f"{args.model_type}, {args.emo_attr}, K = {args.num_clusters}, {epoch_count(args.epochs)}, "
            f"batch {args.batch_size}{unlabel}")


def save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# --- resuming -----------------------------------------------------------------------------
def save_epoch_state(files, training):
    """Everything needed to continue after the epochs `training` (TrainingState) completed;
    each file replaced atomically."""
    model, optimizers = training.model, training.optimizers
    rng, triplet_gen = training.rng, training.triplet_gen
    save_npy(files.cluster_log, np.stack(training.cluster_log))
    save_json(files.history, training.history)
    save_torch(files.resume, {
        "epoch": training.epoch, "best_val_loss": training.best,
        "state_dict": released_state_dict(model),
        "sgd": optimizers[0].state_dict(), "adam": optimizers[1].state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": device_rng_state(run_device(model)),
        "triplet_rng": triplet_gen.get_state() if triplet_gen is not None else None})


def run_device(model):
    """The device a run trains on: its model's."""
    return next(model.parameters()).device


def device_rng_state(device):
    """The random state of the run's GPU (its dropout masks), or None for a CPU run, which
    makes no CUDA call: on a GPU machine that would open a CUDA context on GPU 0."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore_device_rng(saved, device):
    """Put a saved GPU random state back on the run's GPU. A CPU run, or a state saved by a
    CPU run (None) or by an earlier version (a list, one per GPU), leaves the GPU's stream as
    seeded."""
    if device.type == "cuda" and isinstance(saved, torch.Tensor):
        torch.cuda.set_rng_state(saved, device)


def resume_state(files, training):
    """`training`, a fresh run's TrainingState, brought to where the run was saved after its last
    completed epoch."""
    model, optimizers = training.model, training.optimizers
    rng, triplet_gen = training.rng, training.triplet_gen
    if not os.path.isfile(files.resume):
        raise UserError(f"--resume: no interrupted training to continue ({files.resume} not found)")
    state = read_checkpoint(files.resume)
    model.restore_cluster_head()
    model.load_state_dict(canonical_state_dict(state["state_dict"]))
    model.remove_cluster_head()
    optimizers[0].load_state_dict(state["sgd"])
    optimizers[1].load_state_dict(state["adam"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    restore_device_rng(state.get("cuda_rng"), run_device(model))
    if triplet_gen is not None and state["triplet_rng"] is not None:
        triplet_gen.set_state(state["triplet_rng"])
    epoch = state["epoch"]
    try:
        with open(files.history) as f:
            history = json.load(f)
        cluster_log = list(np.load(files.cluster_log, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise UserError(f"--resume: cannot read the training history or cluster log beside "
                        f"{files.resume} ({err}); start the training again without --resume")
    # A kill between writing these and the resume file leaves them one epoch ahead (the lists
    # of per-epoch values; the others, such as the fine-tuning's starting point, stay).
    training.history = {k: v[:epoch] if isinstance(v, list) else v for k, v in history.items()}
    training.cluster_log = cluster_log[:epoch]
    training.epoch, training.best = epoch, state["best_val_loss"]
