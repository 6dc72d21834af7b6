"""Item 9: speaking turns (prediction_process.py --turns vad) on the long demo recording
(demo/long_recording.py): hours of audio per minute of the voice activity detector alone and
of the whole turn prediction (detector, features, the three models), the detector's share of
the prediction time, and the peak resident memory of the command on that recording and,
with --turns-long-minutes, on a longer one made of copies of it."""
import os
import sys

import numpy as np
import soundfile as sf

from bench import ROOT, SEED
from bench.baseline import model_pair
from bench.machine import fast_backends
from bench.measure import timed
from bench.memory import peak_rss
from demo import long_recording
from deepemocluster import prediction
from deepemocluster.compute import use_channels_last
from deepemocluster.features import load_norm_term
from deepemocluster.turn_audio import VAD_TURNS, detected_turns, file_pieces
from deepemocluster.vad import SpeechDetector
from model import prepare_for_inference
from utils import EMOTIONS

SECONDS_PER_HOUR = 3600.0


def hours_per_minute(audio_seconds, seconds):
    """Hours of audio handled per minute of wall time."""
    return audio_seconds / SECONDS_PER_HOUR / (seconds / 60.0)


def write_copies(source, path, copies):
    """A recording of `copies` copies of `source`, written piece by piece (never whole in memory)."""
    info = sf.info(source)
    with sf.SoundFile(path, "w", info.samplerate, info.channels, info.subtype) as out:
        for _ in range(copies):
            with sf.SoundFile(source) as f:
                for block in f.blocks(blocksize=info.samplerate * 60, dtype="int16"):
                    out.write(block)
    return path


def bench_turns(corpus, args, inference, repeats):
    """The detector alone and the whole turn prediction (1 worker, the PyTorch fast path on
    random-weight models, as item 4) on a --turns-minutes recording: {detector, prediction:
    (h audio/min, per-repeat), share, turns, seconds}."""
    folder = os.path.join(corpus.root, "long")
    wav, seconds, _ = long_recording.write(folder, args.turns_minutes)
    rate = sf.info(wav).samplerate
    device = inference.device
    norm = load_norm_term(corpus.norm_dir)
    models = []
    for k in range(len(EMOTIONS)):
        fast, _ = model_pair(args.model_type, args.num_clusters, device, False, SEED + 20 + k)
        models.append(prepare_for_inference(fast, device, use_channels_last(args.precision)))
    runner = prediction.TorchModels(models, norm, inference)
    found = {}

    def detect():
        found["turns"] = detected_turns(SpeechDetector(), file_pieces(wav, rate), rate)

    def predict():
        fast_backends(inference)
        found["rows"] = prediction.predict_folder([wav], runner, 1, turn_plan=VAD_TURNS).rows
    t_detect = timed(detect, repeats, device)
    t_predict = timed(predict, repeats, device)
    return {"detector": (hours_per_minute(seconds, np.median(t_detect)),
                         [hours_per_minute(seconds, t) for t in t_detect]),
            "prediction": (hours_per_minute(seconds, np.median(t_predict)),
                           [hours_per_minute(seconds, t) for t in t_predict]),
            "share": float(np.median(t_detect) / np.median(t_predict)),
            "turns": len(found["rows"]), "seconds": seconds, "wav": wav}


def turns_peak_rss(corpus, wav, long_minutes):
    """Peak RSS (MiB) of `prediction_process.py --turns vad` (the shipped demo models) on `wav`
    and, with `long_minutes`, on copies of it lasting that long: {minutes: (MiB, seconds)}."""
    work = os.path.join(corpus.root, "turns_rss")
    minutes = sf.info(wav).duration / 60.0
    runs = {minutes: wav}
    if long_minutes:
        copies = max(1, round(long_minutes / minutes))
        folder = os.path.join(work, "long_input")
        os.makedirs(folder, exist_ok=True)
        runs[copies * minutes] = write_copies(wav, os.path.join(folder, "long.wav"), copies)
    out = {}
    for length, path in runs.items():
        cmd = [sys.executable, os.path.join(ROOT, "prediction_process.py"), "--input", os.path.dirname(path),
               "--output", os.path.join(work, f"turns_{length:.0f}min.csv"), "--turns", "vad"]
        out[length] = peak_rss(cmd, work, f"turns_{length:.0f}min")
    return out
