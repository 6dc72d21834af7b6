"""Room on the disk for the long work, checked before it starts.

A chunk cache's size is known before it is built, and a training run's files (checkpoint,
resume state, cluster log) before its first epoch: a run that cannot fit stops at once with
the figures, instead of after hours at a full disk. A write that still meets a full disk is
reported by utils.atomic_path (DiskFullError).
"""
import os

from utils import CHUNKS_PER_TURN, UserError, free_bytes, human_size

TENSOR_RECORD_BYTES = 1024        # torch.save's archive entry per tensor (header, alignment), rounded up
RESUME_EXTRA_BYTES = 64 * 1024    # the RNG states and optimiser settings beside the tensors
SMALL_FILES_BYTES = 1024 * 1024   # history and the two plots, with their temporary copies


def require_room(folder, needed, what, hint=""):
    """Stop with the figures when `folder` has less than `needed` bytes free."""
    free = free_bytes(folder)
    if needed > free:
        raise UserError(f"{what} needs {human_size(needed)} in {folder}, but {human_size(free)} "
                        f"is free there{'. ' + hint if hint else ''}")


def state_bytes(tensors):
    """What torch.save writes for these tensors, about."""
    return sum(t.numel() * t.element_size() + TENSOR_RECORD_BYTES for t in tensors)


def training_bytes(model, n_train_turns, epochs):
    """(checkpoint, resume state, cluster log) sizes of a run at its last epoch.

    The resume state holds the model and Adam's two moments of every trained parameter
    (SGD without momentum keeps none); the cluster log one int32 per chunk per epoch.
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    checkpoint = state_bytes(model.state_dict().values())
    resume = checkpoint + 2 * state_bytes(trained) + RESUME_EXTRA_BYTES
    cluster_log = 128 + epochs * n_train_turns * CHUNKS_PER_TURN * 4
    return checkpoint, resume, cluster_log


def check_training_room(folder, run_files, model, n_train_turns, epochs):
    """Before the first epoch: room for the run's files and the temporary copy each is
    written through (the old file stays until the new one is whole). Files of this run
    already there (a resumed run) are replaced, so their space counts as free."""
    checkpoint, resume, cluster_log = training_bytes(model, n_train_turns, epochs)
    needed = checkpoint + resume + cluster_log + max(checkpoint, resume, cluster_log) + SMALL_FILES_BYTES
    needed -= sum(os.path.getsize(p) for p in run_files if os.path.isfile(p))
    require_room(folder, needed, "training",
                 f"It keeps a checkpoint ({human_size(checkpoint)}), a resume state "
                 f"({human_size(resume)}) and a cluster log ({human_size(cluster_log)} after "
                 f"{epochs} epochs), and writes each through a temporary copy: free space, "
                 "or give another --model-dir")
