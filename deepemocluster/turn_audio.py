"""The audio of a recording's speaking turns, read in blocks so that memory holds neither a
long recording nor its 16 kHz signal: the turns the voice activity detector finds
(--turns vad: a first pass over the recording), or those the user gives (--turns FILE).

A turn's Start and End are samples of the recording's 16 kHz signal (the signal the
detector and the models see: the recording resampled whole, as features.read_audio does).
Its audio is the recording's own samples over the same stretch of time, at the
recording's rate (for a 16 kHz recording, samples round(Start·16000) to round(End·16000)),
mixed to mono: so a turn is predicted exactly as a file holding only its samples would be,
as a window of --window is (deepemocluster/time_windows.py). No torch is imported here.
"""
from typing import NamedTuple

import numpy as np
import soundfile as sf

from deepemocluster.speaking_turns import turn_spans
from deepemocluster.time_windows import ForwardReader, skip_forward
from utils import SAMPLE_RATE

BLOCK_SECONDS = 30.0        # what the detector's pass reads from disk at a time
VAD_TURNS = "vad"           # --turns vad: the turns the voice activity detector finds


class GivenTurn(NamedTuple):
    """A turn in 16 kHz samples [start, end), and its speaker (None when not given)."""
    start: int
    end: int
    speaker: str = None


class NoSpeech(Exception):
    """The detector found no speech in the recording."""


def file_pieces(path, rate, block_seconds=BLOCK_SECONDS):
    """The mono float32 samples of an audio file at its `rate`, read forward in pieces."""
    with ForwardReader(path) as f:
        while True:
            data = f.read(max(1, round(block_seconds * rate)), dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data.mean(axis=1)


def array_pieces(samples, rate, block_seconds=BLOCK_SECONDS):
    """Mono samples in memory, in the pieces file_pieces would read them in."""
    size = max(1, round(block_seconds * rate))
    return (samples[i:i + size] for i in range(0, len(samples), size))


def detected_turns(detector, pieces, rate):
    """The speaking turns (GivenTurn, no speaker) that `detector` (vad.SpeechDetector) and
    the turn rules find in a recording; NoSpeech when there are none."""
    probabilities, levels, n_samples = detector.probabilities(pieces, rate)
    spans = turn_spans(probabilities, levels, n_samples)
    if not spans:
        raise NoSpeech("no speech found")
    return [GivenTurn(start, end) for start, end in spans]


def at_rate(position, rate):
    """A 16 kHz sample position as a sample position at `rate` (the same instant)."""
    return position if rate == SAMPLE_RATE else round(position * rate / SAMPLE_RATE)


def read_turns(path, turns):
    """(GivenTurn, mono float32 samples at the file's rate, the rate) of each of `turns`
    (ordered by start) of the audio file `path`, read forward: memory holds the samples from
    the current turn's start to the furthest end read so far, never the recording."""
    with ForwardReader(path) as f:
        rate = f.samplerate
        held, held_start, position = np.zeros(0, np.float32), 0, 0     # held: [held_start, position)
        for turn in turns:
            start, stop = at_rate(turn.start, rate), at_rate(turn.end, rate)
            if start >= position:
                skip_forward(f, start - position, round(BLOCK_SECONDS * rate))
                held, held_start, position = np.zeros(0, np.float32), start, start
            else:
                held, held_start = held[start - held_start:], start
            pieces = [held]
            while position < stop:
                data = f.read(stop - position, dtype="float32", always_2d=True)
                if not len(data):
                    break     # the file ends before its header said
                pieces.append(data.mean(axis=1))
                position += len(data)
            held = np.concatenate(pieces)
            yield turn, held[:stop - start], rate


def array_turns(samples, rate, turns):
    """What read_turns gives for mono samples already in memory."""
    for turn in turns:
        yield turn, samples[at_rate(turn.start, rate):at_rate(turn.end, rate)], rate



def recording_turns(recording, plan, detector=None):
    """(GivenTurn, mono samples at the recording's rate, the rate, whether it is the last) of
    each turn of `recording` (an audio file, or anything with .path, .samples and .rate, as
    prediction.Clip): those `detector` finds when `plan` is VAD_TURNS, else those `plan`
    (turn_files.GivenTurns) gives it. NoSpeech when the detector finds none."""
    in_memory = getattr(recording, "samples", None) is not None
    key = recording.path if in_memory else recording
    rate = recording.rate if in_memory else sf.info(recording).samplerate
    if plan == VAD_TURNS:
        pieces = array_pieces(recording.samples, rate) if in_memory else file_pieces(recording, rate)
        turns = detected_turns(detector, pieces, rate)
    else:
        turns = plan.by_file.get(key, [])
    read = array_turns(recording.samples, rate, turns) if in_memory else read_turns(recording, turns)
    for k, (turn, samples, rate) in enumerate(read):
        yield turn, samples, rate, k == len(turns) - 1


def file_turns(path):
    """(Start s, End s, mono samples at the file's rate, the rate) of each speaking turn the
    detector finds in an audio file: --turns vad for code that predicts with ONNX Runtime
    alone (NoSpeech when there is none)."""
    from deepemocluster.vad import SpeechDetector

    for turn, samples, rate, _ in recording_turns(path, VAD_TURNS, SpeechDetector()):
        yield turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE, samples, rate
