"""What every script shares: the method's constants, errors and the command-line
runner, safe file writing, the CCC metric and loss, sentence-level uniform sampling,
the progress bar and the shared flags.
It imports no torch at import time, so the feature front end (deepemocluster/features.py) runs without it.

Every number here is from docs/method.md and is defined once. The feature front end
is in deepemocluster/features.py, the labels file in deepemocluster/labels.py, devices and precision in deepemocluster/compute.py.
"""
import errno
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager

import numpy as np
import scipy.io

# --- method §3: features ---------------------------------------------------
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 128
FEATURE_VAR = "Audio_data"
NORM_VAR = "normal_para"
CLIP_VALUE = 3.0

# --- method §4: chunking -----------------------------------------------------
FRAMES_PER_CHUNK = 62
CHUNKS_PER_TURN = 11
SHORTEST_WHOLE_TURN = 53     # int((53 − 62) / 10) == 0; at 52 frames the step is negative

# --- method §2: corpus ---------------------------------------------------------
EMOTIONS = ("Act", "Dom", "Val")
LABEL_COLUMN = {"Act": "EmoAct", "Dom": "EmoDom", "Val": "EmoVal"}
TRAIN_SPLIT = "Train"
VALIDATION_SPLITS = ("Validation", "Development")   # v1.8; v1.11 and later
TEST_SPLIT = "Test1"
TEMPORAL_TYPES = ("Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet")
SHORTEST_TRAINING_TURN_SECONDS = 2.75   # MSP-Podcast turns last 2.75 s to 11 s

# --- Defaults of the original (method §6) ---------------------------------------
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 64
DEFAULT_CLUSTERS = 10


class UserError(Exception):
    """A foreseeable problem with the user's input: shown as a message, exit 1."""


class ProcessError(UserError):
    """A problem of one process of a torchrun run (the loss of another process, a file it
    cannot see): shown by every process that meets it, not only by rank 0."""


def first_process():
    """Whether this is rank 0 of a torchrun run (which sets RANK), or not under torchrun."""
    return os.environ.get("RANK", "0") == "0"


def first_process_of_machine():
    """Whether this is the first process of its machine under torchrun (LOCAL_RANK 0), or not
    under torchrun: each machine's terminal gets the run's one-line errors."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


PYTHON = ".venv/bin/python"          # the interpreter as the README names it, in the commands messages give
FREE_SPACE_AND_RERUN = "Free space, then run the same command again."


def run_cli(main, disk_full=FREE_SPACE_AND_RERUN):
    """Run a script's main(), turning UserError into a message and exit 1. Under torchrun,
    an error that every process meets alike is shown once, by rank 0.

    `disk_full` is what the script advises after a full disk (DiskFullError): a sentence,
    or a function of the error that returns one.
    """
    try:
        code = main()
    except DiskFullError as err:
        advice = disk_full(err) if callable(disk_full) else disk_full
        print(f"error: {err}. {advice}", file=sys.stderr)
        sys.exit(1)
    except UserError as err:
        if first_process_of_machine() or isinstance(err, ProcessError):
            print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # a full disk met outside atomic_path: standard output redirected
        full = out_of_space(err)
        if full is None:
            raise
        where = f" writing {full.filename}" if full.filename else ""
        print(f"error: {DISK_FULL} ({full.strerror}){where}. "
              f"{disk_full if isinstance(disk_full, str) else FREE_SPACE_AND_RERUN}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


# --- safe writing ---------------------------------------------------------------
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL = "out of disk space"
NOTHING_HALF_WRITTEN = "nothing half-written was kept"


class DiskFullError(UserError):
    """A write stopped by a full disk (or an exhausted quota). `atomic`: written through a
    temporary file, so the file at `path` is as it was before."""

    def __init__(self, path, reason, free, atomic=True):
        super().__init__(path, reason, free, atomic)      # the arguments, so that it pickles
        self.path, self.reason, self.free, self.atomic = path, reason, free, atomic

    def __str__(self):
        folder = os.path.dirname(self.path) or "."
        return (f"{DISK_FULL} ({self.reason}) writing {self.path}: {human_size(self.free)} free "
                f"in {folder}{'; ' + NOTHING_HALF_WRITTEN if self.atomic else ''}")


@contextmanager
def full_disk_reported(path, atomic=False):
    """Raise a write into `path` that a full disk stopped as DiskFullError."""
    try:
        yield
    except DiskFullError:     # a write nested in this one, already reported
        raise
    except Exception as err:  # the OSError may come wrapped (torch.save, a caller's UserError)
        full = out_of_space(err)
        if full is None:
            raise
        raise DiskFullError(path, full.strerror or "no space left",
                            free_bytes(os.path.dirname(os.path.abspath(path))), atomic) from None


def out_of_space(err):
    """The ENOSPC/EDQUOT OSError behind `err`: itself, or an exception it was raised from or
    while handling (torch.save reports a failed write as a RuntimeError raised while handling
    it); else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in OUT_OF_SPACE:
            return err
        err = err.__cause__ or err.__context__
    return None


def free_bytes(folder):
    """Free space for this user in `folder`, or in its nearest existing parent."""
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def human_size(n):
    """Bytes as a short figure: 512 B, 3.4 MB, 48.1 GB (powers of 1000, as df -H)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it into place on success.

    A killed or failed write never leaves a truncated file at `path`, nor the temporary
    file, and the file ends with the permissions an ordinary `open(path, "w")` would give
    (the umask's), not mkstemp's private 0600. A write stopped by a full disk is raised
    as DiskFullError, naming `path` and the free space left.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    with full_disk_reported(path, atomic=True):
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                       dir=folder)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~current_umask())
            yield tmp
            os.replace(tmp, path)
        finally:             # before the free space is measured
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_mat(path, name, value):
    with atomic_path(path) as tmp:
        write_mat(tmp, name, value)


def write_mat(path, name, value):
    """A .mat file holding one variable, written in place (save_mat writes it safely)."""
    with open(path, "wb") as f:
        scipy.io.savemat(f, {name: value})


def load_mat(path, name):
    return scipy.io.loadmat(path)[name]


def save_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)


def file_sha256(path):
    """The sha256 hex digest of a file's bytes, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def save_npy(path, array):
    """An array as .npy (np.save's bytes), written through Python's file write: numpy's own
    fast path reports a full disk as a short write without its errno."""
    array = np.ascontiguousarray(array)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
            f.write(array.data)


def save_torch(path, obj):
    import torch

    # Saved through a file object: given a file name, torch names the archive's top folder
    # after it, so the random temporary name would make identical contents differ in bytes.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


# --- method §1 and §6.7: CCC ------------------------------------------------------
def ccc_metric(pred, true):
    """Concordance correlation coefficient with population statistics (numpy defaults)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    mp, mt = pred.mean(), true.mean()
    cov = np.mean((pred - mp) * (true - mt))
    return float(2 * cov / (pred.var() + true.var() + (mp - mt) ** 2))


def ccc_loss(pred, true):
    """1 − CCC over a batch of chunks, with torch's unbiased variance (method §6.7)."""
    pred = pred.reshape(-1).float()
    true = true.reshape(-1).float()
    mp, mt = pred.mean(), true.mean()
    cov = ((true - mt) * (pred - mp)).mean()
    return 1 - 2 * cov / (true.var() + pred.var() + (mt - mp) ** 2)


# --- method §6.5: sentence-level uniform sampling ------------------------------
def sentence_uniform_weights(assignment, n_clusters):
    """Each turn's sampling weight: the sum of its chunks' cluster weights 1/|k|.

    `assignment` holds one cluster per chunk, turn-major (turns × 11). Empty
    clusters get no weight (and have no chunks), so nothing divides by zero.
    """
    assignment = np.asarray(assignment).reshape(-1, CHUNKS_PER_TURN)
    sizes = np.bincount(assignment.reshape(-1), minlength=n_clusters).astype(np.float64)
    cluster_w = np.zeros(n_clusters)
    cluster_w[sizes > 0] = 1.0 / sizes[sizes > 0]
    cluster_w /= cluster_w.sum()
    turn_w = cluster_w[assignment].sum(axis=1)
    return turn_w / turn_w.sum()


def sentence_uniform_sample(assignment, n_clusters, rng):
    """Draw as many turns as there are, with replacement, ∝ their weights; shuffled."""
    weights = sentence_uniform_weights(assignment, n_clusters)
    drawn = rng.choice(len(weights), size=len(weights), replace=True, p=weights)
    rng.shuffle(drawn)
    return drawn


# --- output and command-line flags shared by the scripts --------------------------
def progress(iterable=None, **kw):
    """A progress bar on stderr, shown when stderr is a terminal (under torchrun, by rank 0 only)."""
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, mininterval=1.0, disable=None if first_process() else True,
                **kw)


def at_least(minimum, what):
    """An argparse type: an integer >= minimum, refused with a clear message otherwise."""
    import argparse

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value
    return parse


def add_model_args(parser, one_model=True, runtime=True):
    """The original's five flags (-ep -batch -emo -nc -mt) and the shared run flags.

    Without `one_model` (prediction, export: three attribute models), no -emo, -nc or
    -unlabel: deepemocluster.model_flags.add_model_selection adds per-attribute ones. Without `runtime`,
    no --device or --precision."""
    from deepemocluster.corpus import MODEL_DIR, NORM_DIR

    parser.add_argument("-ep", "--epochs", type=at_least(1, "-ep"), default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("-batch", "--batch_size", type=at_least(1, "-batch"), default=DEFAULT_BATCH,
                        help=f"turns per batch (default {DEFAULT_BATCH})")
    if one_model:
        parser.add_argument("-emo", "--emo_attr", choices=EMOTIONS, default="Val",
                            help="emotional attribute (default Val)")
        parser.add_argument("-nc", "--num_clusters", type=at_least(2, "-nc"),
                            default=DEFAULT_CLUSTERS,
                            help=f"k-means clusters K (default {DEFAULT_CLUSTERS})")
    parser.add_argument("-mt", "--model_type", choices=TEMPORAL_TYPES, default="Temp-Triplet",
                        help="temporal modelling (default Temp-Triplet)")
    if one_model:
        parser.add_argument("-unlabel", "--unlabel_size", type=at_least(0, "-unlabel"), default=0,
                            help="unlabelled turns per epoch for semi-supervised training (default 0)")
    parser.add_argument("--norm-dir", default=NORM_DIR, help="NormTerm folder")
    parser.add_argument("--model-dir", default=MODEL_DIR, help="checkpoint folder")
    if runtime:
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                            help="auto (default): the fast path in fp32 (channels-last convolutions, "
                                 "BatchNorm folded for evaluation), with bfloat16 autocast for training "
                                 "where the hardware has native bf16; bf16: bfloat16 autocast everywhere; "
                                 "fp32: the original numerics exactly")
