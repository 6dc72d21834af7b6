"""The feature front end (method §3–4): audio reading, the mel spectrogram, the
normalisation terms, and chunking a turn into 11 chunks.

Every number comes from utils.py, where each is defined once.
"""
import functools
import os
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from utils import (CHUNKS_PER_TURN, CLIP_VALUE, EMOTIONS, FRAMES_PER_CHUNK, HOP_LENGTH, N_FFT,
                   N_MELS, NORM_VAR, PYTHON, SAMPLE_RATE, SHORTEST_WHOLE_TURN, UserError, atomic_path,
                   load_mat, write_mat)


# --- method §3: audio and the mel spectrogram -------------------------------------
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


@dataclass(frozen=True, eq=False)
class FeatureNorm:
    """The NormTerm's feature statistics, (128,) float64 each: what every feature frame is
    normalised with (method §3), one value wherever features are normalised."""
    mean: np.ndarray
    std: np.ndarray

    def apply(self, feat):
        """A (frames, 128) turn normalised (normalise_features)."""
        return normalise_features(feat, self.mean, self.std)


def load_norm_term(norm_dir, emotions=EMOTIONS, labels=None, features=None):
    """Read the NormTerm files: {"features": FeatureNorm, "<attribute>_mean"/"_std": the label
    mean and std of each attribute in `emotions`}. When they are missing, the error gives the
    norm_para.py command that computes them from the corpus's `labels` file and `features`
    folder (FILE and DIR where the caller has none)."""
    paths = norm_files(norm_dir)
    wanted = ["feat_mean", "feat_std"] + [f"{e}_{s}" for e in emotions for s in ("mean", "std")]
    missing = [paths[k] for k in wanted if not os.path.isfile(paths[k])]
    if missing:
        raise UserError(
            f"normalisation file(s) missing: {', '.join(missing)}. Compute them with `{PYTHON} "
            f"norm_para.py --labels {labels or 'FILE'} --features {features or 'DIR'} --norm-dir "
            f"{norm_dir}` (from the corpus's Train split; see README).")
    values = {key: np.asarray(load_mat(paths[key], NORM_VAR), dtype=np.float64).reshape(-1) for key in wanted}
    term = {"features": FeatureNorm(values.pop("feat_mean"), values.pop("feat_std"))}
    term.update((key, float(value[0])) for key, value in values.items())
    return term


def save_norm_term(term, norm_dir):
    """Write the NormTerm files that change, all or none: each to a temporary file, renamed
    into place only once all are whole (a full disk leaves the old set, not a mix). A file
    that already holds the same values is left as it is."""
    paths = norm_files(norm_dir)
    with ExitStack() as renames:
        for key, value in term.items():
            value = np.asarray(value, dtype=np.float64).reshape(1, -1)
            if os.path.isfile(paths[key]):
                try:
                    if np.array_equal(load_mat(paths[key], NORM_VAR), value):
                        continue
                except Exception:
                    pass
            write_mat(renames.enter_context(atomic_path(paths[key])), NORM_VAR, value)
    return paths


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
