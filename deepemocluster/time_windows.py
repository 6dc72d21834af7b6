"""Emotion over time: a recording cut into windows, each predicted as one turn.

A window is the file's own samples from its start to its end (at the file's sample
rate), read forward from disk, so memory holds one window and never the whole file.
Its samples are then treated exactly as a file holding only them would be: mixed to
mono, resampled to 16 kHz, peak-normalised over the window, mel spectrogram (method §3).
"""
import numpy as np
import soundfile as sf

from deepemocluster.features import mel_spectrogram
from utils import FRAMES_PER_CHUNK, HOP_LENGTH, SAMPLE_RATE

# One chunk of 62 frames of 256 samples at 16 kHz: the shortest window that fills a chunk.
CHUNK_SECONDS = FRAMES_PER_CHUNK * HOP_LENGTH / SAMPLE_RATE   # 0.992 s


class ForwardReader(sf.SoundFile):
    """A SoundFile read strictly forward, without seeking.

    soundfile seeks after every read of a seekable file, and libsndfile 1.2.2 does not
    seek sample-accurately in MP3: a second read of an MP3 then returns other samples
    than a whole-file read. Read forward, every format gives the whole-file samples.
    """

    def seekable(self):
        return False


def shorter_than_a_chunk(n_samples, sample_rate):
    """Whether n samples at `sample_rate` last less than one chunk (0.992 s), exactly."""
    return n_samples * SAMPLE_RATE < FRAMES_PER_CHUNK * HOP_LENGTH * sample_rate


def plan_windows(n_samples, sample_rate, window, hop):
    """[start, stop) sample spans of the windows of a recording of `n_samples`.

    Windows of `window` seconds start at 0, hop, 2·hop, … and the sequence stops
    after the first window that reaches the end (a recording shorter than a window
    is one window). A last window shorter than one chunk is merged into the one
    before: that one is extended to the end of the recording.
    """
    length = max(1, round(window * sample_rate))
    step = max(1, round(hop * sample_rate))
    spans, start = [], 0
    while True:
        stop = min(start + length, n_samples)
        spans.append([start, stop])
        start += step
        if stop >= n_samples or start >= n_samples:
            break
    if len(spans) > 1 and shorter_than_a_chunk(spans[-1][1] - spans[-1][0], sample_rate):
        spans.pop()
        spans[-1][1] = n_samples
    return [tuple(s) for s in spans]


def read_windows(path, window, hop):
    """Each window of the audio file `path`: (start s, end s, mono float32 samples,
    sample rate, whether it is the file's last window), read forward in pieces of at
    most one window."""
    with ForwardReader(path) as f:
        rate = f.samplerate
        spans = plan_windows(f.frames, rate, window, hop)
        piece = max(1, round(window * rate))
        held, held_start, position = np.zeros(0, np.float32), 0, 0   # held: [held_start, position)
        for k, (start, stop) in enumerate(spans):
            if start >= position:
                skip_forward(f, start - position, piece)
                held, held_start, position = np.zeros(0, np.float32), start, start
            else:
                held, held_start = held[start - held_start:], start
            while position < stop:
                data = f.read(min(stop - position, piece), dtype="float32", always_2d=True)
                if not len(data):
                    break   # the file ends before its header said
                held = np.concatenate([held, data.mean(axis=1)])
                position += len(data)
            yield start / rate, position / rate, held, rate, k == len(spans) - 1


def clip_windows(samples, rate, window, hop):
    """Each window of mono samples already in memory, as read_windows gives those of a file."""
    spans = plan_windows(len(samples), rate, window, hop)
    for k, (start, stop) in enumerate(spans):
        yield start / rate, stop / rate, samples[start:stop], rate, k == len(spans) - 1


def skip_forward(f, n_samples, piece):
    """Read past n samples, in pieces of at most `piece`."""
    while n_samples > 0:
        got = len(f.read(min(n_samples, piece), dtype="float32", always_2d=True))
        if not got:
            return
        n_samples -= got


def window_features(samples, sample_rate):
    """method §3 features, (frames, 128), of one window's mono samples at the file's rate.

    Raises ValueError on an empty or silent window (as for a file).
    """
    if samples.size == 0:
        raise ValueError("empty audio (no samples)")
    if sample_rate != SAMPLE_RATE:
        import librosa

        samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    return mel_spectrogram(samples.astype(np.float32))


def audio_seconds(path):
    """The duration of an audio file in seconds, from its header."""
    return sf.info(path).duration
