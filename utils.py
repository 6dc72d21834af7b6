"""Shared pieces of the method: constants, features, normalisation, chunking,
CCC metric and loss, sentence-level uniform sampling, safe file writing.

Every number here is from docs/method.md and is defined once.
"""
import csv
import functools
import json
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager

import numpy as np
import scipy.io
import torch

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
    # Saved through a file object: given a file name, torch names the archive's top folder
    # after it, so the random temporary name would make identical contents differ in bytes.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)


# --- method §3: mel spectrogram -----------------------------------------------
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
    """method §3: peak-normalised 128-band Slaney mel power spectrogram, (frames, 128).

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


# What soundfile (libsndfile ≥ 1.1) reads; other files are skipped and counted.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def extract_features(path):
    """method §3 features of one audio file, (frames, 128) float32.

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


# --- method §3: normalisation --------------------------------------------------
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
    """method §3: (x − mean) / std, NaN set to 0, clipped to [−3, 3]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (np.asarray(feat, dtype=np.float64) - mean) / std
    x = np.nan_to_num(x, nan=0.0, posinf=CLIP_VALUE, neginf=-CLIP_VALUE)
    return np.clip(x, -CLIP_VALUE, CLIP_VALUE).astype(np.float32)


# --- method §4: chunking ------------------------------------------------------------
def chunk_starts(n_frames):
    """Start frame of each of the 11 chunks: i·floor((T − m)/(C − 1))."""
    step = max(n_frames - FRAMES_PER_CHUNK, 0) // (CHUNKS_PER_TURN - 1)
    return np.arange(CHUNKS_PER_TURN) * step


def is_whole_turn_chunked(n_frames):
    """Whether the original chunks a turn of `n_frames` as 11 copies of the whole, unpadded
    turn: its step int((T − 62)/10) truncates to 0 for 53 ≤ T ≤ 61 (method §4)."""
    return SHORTEST_WHOLE_TURN <= n_frames < FRAMES_PER_CHUNK


def pad_short_turn(feat):
    """Pad a turn shorter than one chunk with zeros (the normalised mean)."""
    n = feat.shape[0]
    if n >= FRAMES_PER_CHUNK:
        return feat
    pad = np.zeros((FRAMES_PER_CHUNK - n, feat.shape[1]), dtype=feat.dtype)
    return np.concatenate([feat, pad], axis=0)


def chunk_turn(feat, whole_short_turns=False):
    """A normalised (frames, 128) turn → (11, 62, 128) chunks.

    A turn shorter than one chunk is padded with zeros (training, and turns of 52
    frames or fewer, on which the original fails). With `whole_short_turns` (testing
    and prediction), a turn of 53–61 frames becomes what the original makes of it:
    (11, T, 128), every chunk the whole unpadded turn.
    """
    if whole_short_turns and is_whole_turn_chunked(feat.shape[0]):
        return np.repeat(feat[None], CHUNKS_PER_TURN, axis=0)
    feat = pad_short_turn(feat)
    idx = chunk_starts(feat.shape[0])[:, None] + np.arange(FRAMES_PER_CHUNK)[None, :]
    return feat[idx]


def short_turn_warning(whole, padded, what="turn(s)"):
    """The warning for turns shorter than one chunk: which rule each got (method §4)."""
    parts = []
    if whole:
        parts.append(f"{len(whole)} {what} of {SHORTEST_WHOLE_TURN}–{FRAMES_PER_CHUNK - 1} frames "
                     "were chunked as the original does (every chunk the whole, unpadded turn), "
                     f"e.g. {', '.join(whole[:3])}")
    if padded:
        parts.append(f"{len(padded)} {what} shorter than {FRAMES_PER_CHUNK} frames were padded with "
                     f"zeros to one chunk (the original fails on turns of {SHORTEST_WHOLE_TURN - 1} "
                     f"frames or fewer), e.g. {', '.join(padded[:3])}")
    return "; ".join(parts)


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
    cov = torch.mean((true - mt) * (pred - mp))
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


# --- labels file (method §2) ---------------------------------------------------------
MISSING_LABEL_TEXT = ("", "nan", "na", "n/a", "none")


def read_label_table(csv_path, columns):
    """The labels file as a table of strings; `columns` must be present (found by name,
    in any order; other columns are ignored)."""
    import pandas as pd

    if not os.path.isfile(csv_path):
        raise UserError(f"labels file not found: {csv_path}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_filter=False,
                            skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"labels file {csv_path} lacks the column(s) {', '.join(columns)} "
                        "(it has: no header)")
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as err:
        raise UserError(f"labels file {csv_path} is not a readable CSV file "
                        f"({(str(err).splitlines() or [type(err).__name__])[0]})")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"labels file {csv_path} lacks the column(s) {', '.join(missing)} "
                        f"(it has: {', '.join(table.columns) or 'no header'})")
    return table


def label_splits(csv_path):
    """The values of `Split_Set` in the labels file, in order of first appearance."""
    table = read_label_table(csv_path, ["Split_Set"])
    return list(dict.fromkeys(s.strip() for s in table["Split_Set"]))


def validation_split(csv_path, asked="auto"):
    """The split used for validation: `asked`, or with 'auto' `Validation` (v1.8) if the
    file has it, else `Development` (v1.11 and later)."""
    splits = label_splits(csv_path)
    if asked != "auto":
        return asked
    for name in VALIDATION_SPLITS:
        if name in splits:
            return name
    raise UserError(f"labels file {csv_path} has neither a Validation nor a Development split "
                    f"(its splits: {', '.join(splits) or 'none'}); name one with --val-split")


def read_labels(csv_path, split, emotions=()):
    """File stems of one split and, per attribute asked for, their labels (1–7 scale).

    Rows of the split that lack a label asked for are left out with a warning that
    gives the count; a split without any such label (Test3 of v1.11 and later) is refused.
    """
    needed = ["FileName", "Split_Set"] + [LABEL_COLUMN[e] for e in emotions]
    table = read_label_table(csv_path, needed)
    rows = table[table["Split_Set"].str.strip() == split]
    if rows.empty:
        splits = list(dict.fromkeys(s.strip() for s in table["Split_Set"]))
        raise UserError(f"labels file {csv_path} has no rows in the split '{split}' "
                        f"(its splits: {', '.join(splits) or 'none'})")
    keep = np.ones(len(rows), dtype=bool)
    for emo in emotions:
        text = rows[LABEL_COLUMN[emo]].str.strip()
        absent = text.str.lower().isin(MISSING_LABEL_TEXT).to_numpy()
        if absent.all():
            raise UserError(f"the split '{split}' of {csv_path} has no {LABEL_COLUMN[emo]} labels "
                            "(like Test3 of MSP-Podcast v1.11 and later): test on a labelled split, "
                            "or predict its audio with prediction_process.py")
        if absent.any():
            warnings.warn(f"{int(absent.sum())} of {len(rows)} {split} row(s) of {csv_path} have no "
                          f"{LABEL_COLUMN[emo]} label and are left out", stacklevel=2)
        keep &= ~absent
    rows = rows[keep]
    stems = [os.path.splitext(os.path.basename(name.strip()))[0] for name in rows["FileName"]]
    labels = {}
    for emo in emotions:
        column = LABEL_COLUMN[emo]
        try:
            labels[emo] = np.array([float(v) for v in rows[column]])
        except ValueError as err:
            raise UserError(f"labels file {csv_path}: a non-numeric {column} value ({err})")
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


# oneDNN instruction sets below native bf16: ONEDNN_MAX_CPU_ISA set to one of these makes
# bf16 emulated (slow) even on a CPU that has it, as on a CPU without it.
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                     "AVX512_CORE_VNNI")
ISAS_WITHOUT_AMX = ISAS_WITHOUT_BF16 + ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_capability():
    """The CPU's vector capability as the convolutions see it: 'AMX', 'AVX-512 BF16',
    'AVX-512', 'AVX2' or the machine name (e.g. 'arm64'), lowered by ONEDNN_MAX_CPU_ISA
    and ATEN_CPU_CAPABILITY when they are set."""
    import platform

    flags = cpu_flags()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    capped_avx2 = isa.startswith(("SSE", "AVX2")) or isa == "AVX" or aten in ("avx2", "default")
    if not flags:
        return platform.machine() or "unknown"
    if "amx_bf16" in flags and isa not in ISAS_WITHOUT_AMX and not capped_avx2:
        return "AMX"
    if "avx512_bf16" in flags and isa not in ISAS_WITHOUT_BF16 and not capped_avx2:
        return "AVX-512 BF16"
    if "avx512f" in flags and not capped_avx2:
        return "AVX-512"
    if "avx2" in flags and isa not in ("SSE41", "AVX"):
        return "AVX2"
    return platform.machine() or "unknown"


def cpu_has_native_bf16():
    """Whether bf16 convolutions run natively here (AVX-512 BF16 or AMX), not emulated."""
    return cpu_capability() in ("AMX", "AVX-512 BF16")


def use_bf16(precision, device, training=True):
    """Whether to run under bfloat16 autocast.

    'auto' turns it on for training where the hardware has native bf16 (a CUDA GPU
    with bf16, or a CPU with AVX-512 BF16 or AMX); elsewhere, and for inference,
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
    return cpu_has_native_bf16()


COMPILE_MODES = ("auto", "on", "off")
# Full batches from which compiling the encoder pays for itself (bench.py: compiling costs about
# 13-15 s once per process, 1.5 s with a warm cache; it saves about 2.8 s of a 64-turn fp32 step
# on an AVX2 CPU and about 0.4 s of a bf16 step on a native-bf16 one).
COMPILE_MIN_BATCHES = {"fp32": 10, "bf16": 50}


def cxx_compiler():
    """The C++ compiler torch.compile would use on the CPU, or None."""
    import shutil

    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def use_compile(mode, device, precision, full_batches, bf16=False):
    """Whether training compiles the encoder (torch.compile, README Performance).

    'on' and 'off' as asked. 'auto' where it pays: on the CPU fast path (not
    --precision fp32, the original numerics exactly) with a C++ compiler, for a run of
    at least COMPILE_MIN_BATCHES full batches (fewer in fp32, where a step gains more).
    """
    if mode != "auto":
        return mode == "on"
    return (device.type == "cpu" and precision != "fp32" and cxx_compiler() is not None
            and full_batches >= COMPILE_MIN_BATCHES["bf16" if bf16 else "fp32"])


# glibc's malloc: blocks up to 32 MiB (its largest mmap threshold) come from the heap and
# are reused; up to 256 MiB of freed heap is kept rather than handed back to the system.
MALLOC_MMAP_THRESHOLD = 32 * 2**20
MALLOC_TRIM_THRESHOLD = 256 * 2**20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory():
    """Let glibc reuse freed blocks of up to 32 MiB instead of returning them to the system.

    By default a block above a (dynamic) threshold is mapped afresh for every tensor, and
    every page of it is faulted in and zeroed by the kernel on first touch: a third of the
    time of a CPU evaluation pass. Evaluation passes are sized to stay under this threshold
    (model.CPU_TURNS_PER_PASS). Does nothing where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def configure_backends(device, bf16):
    """Memory reuse on the CPU (reuse_freed_memory); cuDNN autotuning on CUDA, and no TF32
    unless bf16 was chosen, so fp32 stays fp32 on Ampere and later GPUs (released
    checkpoints then reproduce to float precision)."""
    reuse_freed_memory()
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
                        help="auto (default): the fast path in fp32 (channels-last convolutions, "
                             "BatchNorm folded for evaluation), with bfloat16 autocast for training "
                             "where the hardware has native bf16; bf16: bfloat16 autocast everywhere; "
                             "fp32: the original numerics exactly")
