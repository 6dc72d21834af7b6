"""What a training run writes (method §6 step 10, README "Flags"): the released checkpoint
name and its companions (Run), the plots of its trends, and the state after each epoch that
--resume continues from. main.py writes them (under torchrun, rank 0 alone)."""
import json
import os

import numpy as np
import torch

from model import canonical_state_dict, checkpoint_name, read_checkpoint, released_state_dict
from utils import UserError, atomic_path, save_json, save_npy, save_torch


# Each file of a run: its name is the checkpoint's with the suffix in place of ".pth.tar".
RUN_FILES = {"checkpoint": ".pth.tar", "resume": "_resume.pth.tar", "cluster_log": "_clusters.npy",
             "history": "_history.json", "nmi_val_plot": "_NMI_ValLoss.png",
             "train_plot": "_TrainLoss.png"}


class Run:
    """Where one training run keeps its files: the released checkpoint name and its companions."""

    def __init__(self, args):
        name = checkpoint_name(args.epochs, args.batch_size, args.num_clusters, args.emo_attr,
                               args.model_type, args.unlabel_size)
        self.stem = os.path.join(args.model_dir, name[:-len(".pth.tar")])
        for key, suffix in RUN_FILES.items():
            setattr(self, key, self.stem + suffix)

    def files(self):
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


def plot_trends(history, run, title):
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
    save_figure(fig, run.nmi_val_plot)
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
    save_figure(fig, run.train_plot)
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
def save_epoch_state(run, model, optimizers, epoch, best, history, cluster_log, rng, triplet_gen):
    """Everything needed to continue after this epoch; each file replaced atomically."""
    save_npy(run.cluster_log, np.stack(cluster_log))
    save_json(run.history, history)
    save_torch(run.resume, {
        "epoch": epoch + 1, "best_val_loss": best,
        "state_dict": released_state_dict(model),
        "sgd": optimizers[0].state_dict(), "adam": optimizers[1].state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "triplet_rng": triplet_gen.get_state() if triplet_gen is not None else None})


def resume_state(run, model, optimizers, rng, triplet_gen):
    if not os.path.isfile(run.resume):
        raise UserError(f"--resume: no interrupted training to continue ({run.resume} not found)")
    state = read_checkpoint(run.resume)
    model.restore_cluster_head()
    model.load_state_dict(canonical_state_dict(state["state_dict"]))
    model.remove_cluster_head()
    optimizers[0].load_state_dict(state["sgd"])
    optimizers[1].load_state_dict(state["adam"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():   # saved with as many GPUs, or more
        torch.cuda.set_rng_state_all(state["cuda_rng"][:torch.cuda.device_count()])
    if triplet_gen is not None and state["triplet_rng"] is not None:
        triplet_gen.set_state(state["triplet_rng"])
    epoch = state["epoch"]
    try:
        with open(run.history) as f:
            history = json.load(f)
        cluster_log = list(np.load(run.cluster_log, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise UserError(f"--resume: cannot read the training history or cluster log beside "
                        f"{run.resume} ({err}); start the training again without --resume")
    # A kill between writing these and the resume file leaves them one epoch ahead (the lists
    # of per-epoch values; the others, such as the fine-tuning's starting point, stay).
    history = {k: v[:epoch] if isinstance(v, list) else v for k, v in history.items()}
    return epoch, state["best_val_loss"], history, cluster_log[:epoch]
