"""Shared pieces of the method: constants, features, normalisation, chunking,
CCC metric and loss, sentence-level uniform sampling, safe file writing.

Every number here is from SPEC.md and is defined once.
"""
import csv
import functools
import json
import os
import sys
import tempfile
from contextlib import contextmanager

import numpy as np
import scipy.io
import torch

# --- SPEC §3: features ---------------------------------------------------
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 128
FEATURE_VAR = "Audio_data"
NORM_VAR = "normal_para"
CLIP_VALUE = 3.0

# --- SPEC §4: chunking -----------------------------------------------------
FRAMES_PER_CHUNK = 62
CHUNKS_PER_TURN = 11

# --- SPEC §2: corpus ---------------------------------------------------------
EMOTIONS = ("Act", "Dom", "Val")
LABEL_COLUMN = {"Act": "EmoAct", "Dom": "EmoDom", "Val": "EmoVal"}
SPLITS = ("Train", "Validation", "Test1")
TEMPORAL_TYPES = ("Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet")

# --- Defaults of the original (SPEC §6) ---------------------------------------
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

    A killed or failed write never leaves a truncated file at `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    # Saved through a file object: given a file name, torch names the archive's top folder
    # after it, so the random temporary name would make identical contents differ in bytes.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


# --- SPEC §3: mel spectrogram -----------------------------------------------
def read_audio(path):
    """Read a WAV as float mono at 16 kHz (stereo mixed down, resampled)."""
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    return y.astype(np.float32)


def mel_spectrogram(y):
    """SPEC §3: peak-normalised 128-band Slaney mel power spectrogram, (frames, 128).

    Raises ValueError on silence (a zero peak cannot be normalised).
    """
    import librosa

    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if not np.isfinite(peak) or peak == 0.0:
        raise ValueError("silent audio (peak amplitude is 0)")
    power = np.abs(librosa.stft(y / peak, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann",
                                center=True, pad_mode="reflect")) ** 2.0
    mel = np.einsum("...ft,mf->...mt", power, mel_filterbank(), optimize=True)
    return mel.T.astype(np.float32)


@functools.lru_cache(maxsize=1)
def mel_filterbank():
    """The (128, N_FFT/2+1) Slaney mel filters, built once per process: the matrix
    librosa.feature.melspectrogram builds on every call (features agree with it to
    float rounding, not always bit for bit)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0,
                               fmax=SAMPLE_RATE / 2, htk=False, norm="slaney")


AUDIO_EXTENSIONS = (".wav",)


def extract_features(path):
    """SPEC §3 features of one audio file, (frames, 128) float32.

    Raises ValueError with a readable reason for an unreadable, empty or silent file.
    """
    try:
        y = read_audio(path)
    except Exception as err:
        raise ValueError(f"unreadable audio ({type(err).__name__}: {str(err).strip() or 'no detail'})")
    if y.size == 0:
        raise ValueError("empty audio (no samples)")
    return mel_spectrogram(y)


def _one_thread_per_worker():
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def feature_pool(workers):
    """Worker processes for feature extraction: librosa imported once in the parent (the
    workers inherit it) and one BLAS thread per worker, so workers do not fight over cores."""
    from concurrent.futures import ProcessPoolExecutor

    import librosa  # noqa: F401  (loaded before the fork)

    return ProcessPoolExecutor(workers, initializer=_one_thread_per_worker)


def walk_audio(folder):
    """(audio files, other files) under `folder`, in sorted walk order."""
    audio, other = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            (audio if name.lower().endswith(AUDIO_EXTENSIONS) else other).append(path)
    return audio, other


# --- SPEC §3: normalisation --------------------------------------------------
def norm_files(norm_dir):
    names = {"feat_mean": "feat_norm_means.mat", "feat_std": "feat_norm_stds.mat"}
    for emo in EMOTIONS:
        names[f"{emo}_mean"] = f"{emo.lower()}_norm_means.mat"
        names[f"{emo}_std"] = f"{emo.lower()}_norm_stds.mat"
    return {k: os.path.join(norm_dir, v) for k, v in names.items()}


def load_norm_term(norm_dir, emotions=EMOTIONS):
    """Read the NormTerm files: feature mean/std (128,) and label mean/std per attribute."""
    paths = norm_files(norm_dir)
    wanted = ["feat_mean", "feat_std"] + [f"{e}_{s}" for e in emotions for s in ("mean", "std")]
    missing = [paths[k] for k in wanted if not os.path.isfile(paths[k])]
    if missing:
        raise UserError(
            f"normalisation file(s) missing: {', '.join(missing)}. "
            "Compute them with `python norm_para.py --norm-dir " + norm_dir + "` (see README).")
    term = {}
    for key in wanted:
        value = np.asarray(load_mat(paths[key], NORM_VAR), dtype=np.float64).reshape(-1)
        term[key] = value if key.startswith("feat") else float(value[0])
    return term


def normalise_features(feat, mean, std):
    """SPEC §3: (x − mean) / std, NaN set to 0, clipped to [−3, 3]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (np.asarray(feat, dtype=np.float64) - mean) / std
    x = np.nan_to_num(x, nan=0.0, posinf=CLIP_VALUE, neginf=-CLIP_VALUE)
    return np.clip(x, -CLIP_VALUE, CLIP_VALUE).astype(np.float32)


# --- SPEC §4: chunking ------------------------------------------------------------
def chunk_starts(n_frames):
    """Start frame of each of the 11 chunks: i·floor((T − m)/(C − 1))."""
    step = max(n_frames - FRAMES_PER_CHUNK, 0) // (CHUNKS_PER_TURN - 1)
    return np.arange(CHUNKS_PER_TURN) * step


def pad_short_turn(feat):
    """Pad a turn shorter than one chunk with zeros (the normalised mean)."""
    n = feat.shape[0]
    if n >= FRAMES_PER_CHUNK:
        return feat
    pad = np.zeros((FRAMES_PER_CHUNK - n, feat.shape[1]), dtype=feat.dtype)
    return np.concatenate([feat, pad], axis=0)


def chunk_turn(feat):
    """A normalised (frames, 128) turn → (11, 62, 128) chunks (short turns padded)."""
    feat = pad_short_turn(feat)
    idx = chunk_starts(feat.shape[0])[:, None] + np.arange(FRAMES_PER_CHUNK)[None, :]
    return feat[idx]


# --- SPEC §1 and §6.7: CCC ------------------------------------------------------
def ccc_metric(pred, true):
    """Concordance correlation coefficient with population statistics (numpy defaults)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    mp, mt = pred.mean(), true.mean()
    cov = np.mean((pred - mp) * (true - mt))
    return float(2 * cov / (pred.var() + true.var() + (mp - mt) ** 2))


def ccc_loss(pred, true):
    """1 − CCC over a batch of chunks, with torch's unbiased variance (SPEC §6.7)."""
    pred = pred.reshape(-1).float()
    true = true.reshape(-1).float()
    mp, mt = pred.mean(), true.mean()
    cov = torch.mean((true - mt) * (pred - mp))
    return 1 - 2 * cov / (true.var() + pred.var() + (mt - mp) ** 2)


# --- SPEC §6.5: sentence-level uniform sampling ------------------------------
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


# --- labels file ------------------------------------------------------------------
def read_labels(csv_path, split, emotions=()):
    """File stems of one split and, per attribute asked for, their labels (1–7 scale)."""
    if not os.path.isfile(csv_path):
        raise UserError(f"labels file not found: {csv_path}")
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            needed = ["FileName", "Split_Set"] + [LABEL_COLUMN[e] for e in emotions]
            missing = [c for c in needed if c not in columns]
            if missing:
                raise UserError(f"labels file {csv_path} lacks the column(s) {', '.join(missing)} "
                                f"(it has: {', '.join(columns) or 'no header'})")
            rows = [r for r in reader if r["Split_Set"] == split]
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"labels file {csv_path} is not a readable CSV file ({err})")
    if not rows:
        raise UserError(f"labels file {csv_path} has no rows in the split '{split}'")
    stems = [os.path.splitext(os.path.basename(r["FileName"]))[0] for r in rows]
    labels = {}
    for emo in emotions:
        try:
            labels[emo] = np.array([float(r[LABEL_COLUMN[emo]]) for r in rows])
        except ValueError as err:
            raise UserError(f"labels file {csv_path}: a non-numeric {LABEL_COLUMN[emo]} value ({err})")
    return stems, labels


def feature_paths(feat_dir, stems):
    """The .mat of every stem; refuse with the count and first names of missing ones."""
    paths = [os.path.join(feat_dir, s + ".mat") for s in stems]
    missing = [s for s, p in zip(stems, paths) if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} of {len(stems)} feature files missing in {feat_dir}, "
                        f"e.g. {', '.join(m + '.mat' for m in missing[:5])}. "
                        "Run feat_extract.py first (see README).")
    return paths


# --- devices and precision ---------------------------------------------------------
def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def use_bf16(precision, device, training=True):
    """Whether to run under bfloat16 autocast.

    'auto' turns it on for training where the hardware has bf16; inference under
    'auto' stays fp32, so released checkpoints give the authors' predictions to
    float precision. 'bf16' forces it, 'fp32' keeps the original numerics exactly.
    """
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if not training:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()) or \
        bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def configure_backends(device, bf16):
    """cuDNN autotuning on CUDA; no TF32 unless bf16 was chosen, so fp32 stays fp32 on
    Ampere and later GPUs (released checkpoints then reproduce to float precision)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = bf16
        torch.backends.cuda.matmul.allow_tf32 = bf16


def use_channels_last(precision):
    """Channels-last convolutions on the fast path; 'fp32' keeps the original NCHW layout."""
    return precision != "fp32"


def autocast(device, enabled):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_everything(seed):
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress(iterable=None, **kw):
    """A progress bar on stderr, shown when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, mininterval=1.0, disable=None, **kw)


# --- command-line flags shared by the scripts ---------------------------------------
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


def add_model_args(parser, emotion=True, clusters=True):
    """The original's five flags (-ep -batch -emo -nc -mt) and the shared run flags."""
    parser.add_argument("-ep", "--epochs", type=at_least(1, "-ep"), default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("-batch", "--batch_size", type=at_least(1, "-batch"), default=DEFAULT_BATCH,
                        help=f"turns per batch (default {DEFAULT_BATCH})")
    if emotion:
        parser.add_argument("-emo", "--emo_attr", choices=EMOTIONS, default="Val",
                            help="emotional attribute (default Val)")
    if clusters:
        parser.add_argument("-nc", "--num_clusters", type=at_least(2, "-nc"),
                            default=DEFAULT_CLUSTERS,
                            help=f"k-means clusters K (default {DEFAULT_CLUSTERS})")
    parser.add_argument("-mt", "--model_type", choices=TEMPORAL_TYPES, default="Temp-Triplet",
                        help="temporal modelling (default Temp-Triplet)")
    parser.add_argument("-unlabel", "--unlabel_size", type=at_least(0, "-unlabel"), default=0,
                        help="unlabelled turns per epoch for semi-supervised training (default 0)")
    parser.add_argument("--norm-dir", default="./NormTerm", help="NormTerm folder")
    parser.add_argument("--model-dir", default="./trained_models", help="checkpoint folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto (default): channels-last convolutions, and bfloat16 autocast "
                             "for training where the hardware has bf16; bf16: bfloat16 autocast "
                             "everywhere; fp32: the original numerics exactly")
