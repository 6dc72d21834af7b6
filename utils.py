"""What every script shares: the method's constants, errors and the command-line
runner, safe file writing, the CCC metric and loss, sentence-level uniform sampling,
the progress bar and the shared flags.
It imports no torch at import time, so the feature front end (features.py) runs without it.

Every number here is from docs/method.md and is defined once. The feature front end
is in features.py, the labels file in labels.py, devices and precision in runtime.py.
"""
import json
import os
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

# --- Defaults of the original (method §6) ---------------------------------------
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 64
DEFAULT_CLUSTERS = 10


class UserError(Exception):
    """A foreseeable problem with the user's input: shown as a message, exit 1."""


def run_cli(main):
    """Run a script's main(), turning UserError into a message and exit 1."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


# --- safe writing ---------------------------------------------------------------
@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it into place on success.

    A killed or failed write never leaves a truncated file at `path`, and the file
    ends with the permissions an ordinary `open(path, "w")` would give (the umask's),
    not mkstemp's private 0600.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_mat(path, name, value):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, {name: value})


def load_mat(path, name):
    return scipy.io.loadmat(path)[name]


def save_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)


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
    """A progress bar on stderr, shown when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, mininterval=1.0, disable=None, **kw)


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
    -unlabel: release_flags.add_model_selection adds per-attribute ones. Without `runtime`,
    no --device or --precision."""
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
    parser.add_argument("--norm-dir", default="./NormTerm", help="NormTerm folder")
    parser.add_argument("--model-dir", default="./trained_models", help="checkpoint folder")
    if runtime:
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                            help="auto (default): the fast path in fp32 (channels-last convolutions, "
                                 "BatchNorm folded for evaluation), with bfloat16 autocast for training "
                                 "where the hardware has native bf16; bf16: bfloat16 autocast everywhere; "
                                 "fp32: the original numerics exactly")
