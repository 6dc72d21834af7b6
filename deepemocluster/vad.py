"""The voice activity detector of --turns vad: Silero VAD (the silero-vad package, MIT), run
with ONNX Runtime alone (no torch, no torchaudio), on a recording read in blocks.

The package ships its models inside the wheel, so it works offline right after
`pip install silero-vad`. Of them, this uses the 16 kHz "sequence" model, which takes a
block of frames per call and gives the probabilities its streaming model gives frame by
frame (the LSTM state is carried from one call to the next here). Each 32 ms frame of 512
samples comes with the last 64 samples before it (zeros before the first frame), and the
last frame of a recording is padded with zeros. The package itself is never imported (its
Python code imports torch): only the location of its model file is looked up.

The LSTM state starts afresh in every pause of RESET_PAUSE_SECONDS, as at the start of a
recording: carried through a long recording, it can drift until the model no longer hears
speech (on the demo synthesiser's speech it heard 8% of a 10-minute recording's speech
frames, none after minute 4, against 56% of minute 4 alone; with the resets, 58% of the
whole, as of a 2-minute one).
"""
import importlib.util
import os

import numpy as np

from utils import SAMPLE_RATE, UserError

MODEL_PACKAGE = "silero_vad"
MODEL_FILE = os.path.join("data", "silero_vad_16k_sequence.onnx")
FRAME_SAMPLES = 512                  # one speech probability per 32 ms of 16 kHz audio
CONTEXT_SAMPLES = 64                 # the samples before a frame that the model sees with it
FRAMES_PER_CALL = 512                # frames (16.4 s) per ONNX Runtime call
STATE_SHAPE = (1, 1, 128)            # the LSTM's hidden and cell state
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
SILENT_DB = -120.0                   # the level given to digital silence
# A frame is as quiet as the recording's pauses when its level is at most QUIET_MARGIN_DB
# above the NOISE_FLOOR_PERCENTILE-th percentile of the frame levels (the pauses' level:
# any recording with a tenth of pause has it there). The detector's pass knows only the
# frames read so far; the turn rules (speaking_turns.py) use the whole recording's.
NOISE_FLOOR_PERCENTILE = 10
QUIET_MARGIN_DB = 15.0
# The LSTM state is reset once a pause has lasted this long (16 frames).
RESET_PAUSE_SECONDS = 0.5
# The resampler of the 16 kHz signal: soxr's HQ quality, as librosa.resample's default
# ("soxr_hq"), streamed, so that a recording resampled in blocks equals it resampled whole.
RESAMPLE_QUALITY = "HQ"


def model_path():
    """The Silero VAD ONNX file inside the installed silero-vad package; a UserError without it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = os.path.join(folder, MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise UserError("--turns vad needs the silero-vad package (requirements.txt): "
                    "`.venv/bin/pip install silero-vad`")


class SpeechDetector:
    """Silero VAD's speech probability of every frame of a recording (one ONNX Runtime
    session, one thread: the model is small and its frames follow one another)."""

    def __init__(self):
        from deepemocluster.onnx_runner import open_session, session_options

        options = session_options(threads=1)
        options.inter_op_num_threads = 1
        self.session = open_session(model_path(), options)

    def probabilities(self, pieces, rate):
        """The speech probability and the level (dB full scale) of each frame of the
        recording whose mono samples at `rate` come in `pieces` (any sizes), as (frames,)
        float32 arrays, and its length in 16 kHz samples."""
        stream = resampler(rate)
        state = fresh_state()
        context = np.zeros(CONTEXT_SAMPLES, np.float32)
        pending, probs, levels, n_samples, quiet_run = np.zeros(0, np.float32), [], [], 0, 0
        for piece, last in with_last(pieces):
            signal = stream(piece, last)
            n_samples += len(signal)
            pending = np.concatenate([pending, signal])
            whole = len(pending) // (FRAME_SAMPLES * FRAMES_PER_CALL) * FRAME_SAMPLES * FRAMES_PER_CALL
            if last:
                whole = -(-len(pending) // FRAME_SAMPLES) * FRAME_SAMPLES
                pending = np.pad(pending, (0, whole - len(pending)))
            for start in range(0, whole, FRAME_SAMPLES * FRAMES_PER_CALL):
                frames = pending[start:min(whole, start + FRAME_SAMPLES * FRAMES_PER_CALL)]
                frames = frames.reshape(-1, FRAME_SAMPLES)
                levels.append(frame_levels(frames))
                resets, quiet_run = reset_frames(levels, quiet_run)
                for a, b in zip([0] + resets, resets + [len(frames)]):
                    if a in resets:
                        state = fresh_state()
                    if b > a:
                        p, context = self.run(frames[a:b], context, state)
                        probs.append(p)
            pending = pending[whole:]
        if not probs:
            return np.zeros(0, np.float32), np.zeros(0, np.float32), n_samples
        return np.concatenate(probs), np.concatenate(levels), n_samples

    def run(self, frames, context, state):
        """The probabilities of (n, 512) frames following `context`; updates the LSTM `state`."""
        before = np.empty((len(frames), CONTEXT_SAMPLES), np.float32)
        before[0] = context
        before[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        probs, state[0], state[1] = self.session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.ascontiguousarray(np.concatenate([before, frames], axis=1)),
             "h": state[0], "c": state[1]})
        return np.asarray(probs, np.float32).reshape(-1), frames[-1, -CONTEXT_SAMPLES:].copy()


def fresh_state():
    """The LSTM's hidden and cell state at the start of a recording."""
    return [np.zeros(STATE_SHAPE, np.float32), np.zeros(STATE_SHAPE, np.float32)]


def quiet_frames(levels):
    """Whether each frame of `levels` is as quiet as the pauses among them."""
    levels = np.asarray(levels)
    if not levels.size:
        return np.zeros(0, bool)
    return levels <= np.percentile(levels, NOISE_FLOOR_PERCENTILE) + QUIET_MARGIN_DB


def reset_frames(levels, quiet_run):
    """The frames of the last block of `levels` (a list of blocks) at which a pause reaches
    RESET_PAUSE_SECONDS, given `quiet_run` quiet frames before the block; and the quiet run
    at its end. Quiet is judged against all the blocks so far."""
    quiet = quiet_frames(np.concatenate(levels))[-len(levels[-1]):]
    needed, resets = round(RESET_PAUSE_SECONDS / FRAME_SECONDS), []
    for k, is_quiet in enumerate(quiet):
        quiet_run = quiet_run + 1 if is_quiet else 0
        if quiet_run == needed:
            resets.append(k)
    return resets, quiet_run


def frame_levels(frames):
    """The level of each frame, 10·log10 of its mean square (digital silence at SILENT_DB)."""
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), SILENT_DB).astype(np.float32)


def resampler(rate):
    """A function (mono piece at `rate`, whether it is the last) → its 16 kHz samples, streamed."""
    if rate == SAMPLE_RATE:
        return lambda piece, last: np.asarray(piece, np.float32)
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    return lambda piece, last: stream.resample_chunk(np.asarray(piece, np.float32), last=last)


def with_last(pieces):
    """(piece, whether it is the last) of each piece; an empty last piece if there were none."""
    held = None
    for piece in pieces:
        if held is not None:
            yield held, False
        held = piece
    yield (np.zeros(0, np.float32) if held is None else held), True
