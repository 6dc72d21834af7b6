"""Emotion predictions from Python code, with the numbers prediction_process.py writes.

    from deepemocluster.predictor import Predictor
    predictor = Predictor(release="v1.8-ssl")                 # the three attribute models, once
    table = predictor.predict("speech.wav")                   # a DataFrame with the CSV's columns
    table = predictor.predict(["a.wav", "b.flac"])            # one row per file, in this order
    table = predictor.predict(samples, sample_rate=44100)     # a NumPy array, (n,) or (n, channels)
    table, vectors = predictor.predict("talk.wav", window=11, embeddings=True)
    table = predictor.predict("podcast.mp3", turns="vad")      # one row per speaking turn
    table = predictor.predict("AUDIO_DIR", turns="diarisation.rttm")   # or a CSV, or a DataFrame

A Predictor takes prediction_process.py's model flags as keyword arguments (release,
model_type, model_dir, norm_dir, epochs, batch_size, num_clusters, unlabel_size, device,
precision, workers, or onnx for the files of export_onnx.py), checked as the command line
checks them, and loads the Act, Dom and Val models once. predict() runs the prediction engine (prediction.predict_folder) on what it is given, so a file
gets the row the CSV gives it; an array is predicted as a file holding those samples would be.
The backend flags the script sets (on a GPU: no TF32, cuDNN autotuning) apply while a Predictor
loads and predicts; the process's own are as it found them once it returns.
"""
import contextlib
import io
import os
import warnings

import numpy as np

from deepemocluster import prediction, prediction_flags
from deepemocluster.compute import backends_restored, configured_backends
from deepemocluster.demo_models import are_demo_models, demo_models_warning
from deepemocluster.features import walk_audio
from deepemocluster.turn_audio import VAD_TURNS
from deepemocluster.turn_files import turn_plan
from utils import EMOTIONS, SAMPLE_RATE, UserError

# keyword argument → prediction_process.py flag
FLAGS = {"release": "--release", "model_type": "-mt", "model_dir": "--model-dir",
         "norm_dir": "--norm-dir", "epochs": "-ep", "batch_size": "-batch", "num_clusters": "-nc",
         "unlabel_size": "-unlabel", "device": "--device", "precision": "--precision",
         "workers": "--workers", "onnx": "--onnx"}


def script_args(argv):
    """prediction_process.py's parsed flags (deepemocluster/prediction_flags.py); a flag it refuses is a UserError with its message."""
    shown = io.StringIO()
    try:
        with contextlib.redirect_stderr(shown):
            return prediction_flags.parse_args(argv)
    except SystemExit:
        lines = shown.getvalue().strip().splitlines() or ["invalid settings"]
        raise UserError(lines[-1].split("error: ", 1)[-1]) from None


def flag_value(value):
    """A keyword argument as its flag is typed: 30,30,10 for a sequence."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


class Predictor:
    """The three attribute models of a release or a model folder, loaded once, and their NormTerm."""

    def __init__(self, **settings):
        unknown = sorted(set(settings) - set(FLAGS))
        if unknown:
            raise TypeError(f"Predictor() got unknown setting(s) {', '.join(unknown)} "
                            f"(it takes: {', '.join(FLAGS)})")
        self.argv = [word for key, value in settings.items() if value is not None
                     for word in (FLAGS[key], flag_value(value))]
        self.args = script_args(self.argv)
        with backends_restored():
            self.runner = prediction.load_runner(self.args)
        self.demo_models = are_demo_models(self.args, self.runner)
        self.demo_warned = False

    def __repr__(self):
        return f"Predictor({prediction.models_title(self.args, self.runner)})"

    def predict(self, audio, sample_rate=None, window=None, hop=None, embeddings=False, name="audio",
                skip_errors=False, turns=None):
        """Arousal, dominance and valence of `audio`: an audio file, a folder (searched as
        --input is), a list of files, or a NumPy array of samples ((n,) or (n, channels),
        as soundfile reads them) with its `sample_rate`, whose rows get `name`.

        Returns a pandas DataFrame with the CSV's columns (File_Name[, Start, End[, Speaker]],
        Aro-Score, Dom-Score, Val-Score) on the labels' scale, one row per file or, with
        `window` (and `hop`) seconds, per window, or with `turns` per speaking turn: "vad"
        (the turns the voice activity detector finds), or the turns of a CSV or RTTM file (its
        path) or of a table with the columns File_Name, Start, End[, Speaker] (File_Name
        naming a file as --turns FILE does, or `name` for an array). With `embeddings`, also
        {"Act", "Dom", "Val": (rows, 256) float32 turn embeddings}. The table's
        attrs["models"] names the models. A file that cannot be predicted (or, with turns,
        holds no speech) raises a UserError naming it, or with `skip_errors` is left out
        with a warning; files shorter or longer than training turns are predicted with a warning.
        """
        import pandas as pd

        window, hop = self.window_flags(window, hop)
        if turns is not None and window is not None:
            raise UserError("window and turns exclude each other: fixed windows, or speaking turns")
        items = self.inputs(audio, sample_rate, name)
        plan = self.turn_plan(turns, items, audio)
        if plan is not None and plan != VAD_TURNS:
            items = [item for item in items if getattr(item, "path", item) in plan.by_file]
        with self.scripts_backends():
            result = prediction.predict_folder(items, self.runner, self.args.workers, window, hop, embeddings,
                                               turn_plan=plan)
        if result.errors:
            listed = "; ".join(f"{file}: {reason}" for file, reason in result.errors[:3])
            message = f"{len(result.errors)} of {len(items)} input(s) could not be predicted: {listed}"
            if not skip_errors:
                raise UserError(message)
            warnings.warn(message, stacklevel=2)
        if self.demo_models and not self.demo_warned and demo_models_warning(items):
            warnings.warn(demo_models_warning(items), stacklevel=2)
            self.demo_warned = True
        if result.long_files:
            warnings.warn(prediction.long_recording_warning(result.long_files), stacklevel=2)
        if result.short_turns:
            warnings.warn(prediction.short_recording_warning(result.short_turns, window),
                          stacklevel=2)
        table = pd.DataFrame(result.rows, columns=prediction.csv_header(
            window is not None or plan is not None, getattr(plan, "speakers", False)))
        table.attrs["models"] = prediction.models_title(self.args, self.runner)
        if embeddings:
            return table, dict(zip(EMOTIONS, result.embeddings))
        return table

    def scripts_backends(self):
        """prediction_process.py's backend flags while this Predictor predicts (on a GPU, no
        TF32: its numbers depend on it), the caller's own again once it returns."""
        if isinstance(self.runner, prediction.TorchModels):
            return configured_backends(self.runner.settings.device)
        return contextlib.nullcontext()        # ONNX Runtime: no torch flags

    def window_flags(self, window, hop):
        """--window and --hop, checked as the command line checks them."""
        if window is None:
            if hop is not None:
                raise UserError("hop needs window")
            return None, None
        extra = ["--window", repr(float(window))] + ([] if hop is None else ["--hop", repr(float(hop))])
        args = script_args(self.argv + extra)
        return args.window, args.hop

    @staticmethod
    def turn_plan(turns, items, audio):
        """The turn plan of `turns` for `items` (files under a folder named as --turns FILE
        names them under --input; an array's Clip by its name)."""
        clips = {item.path: round(len(item.samples) * SAMPLE_RATE / item.rate)
                 for item in items if isinstance(item, prediction.Clip)}
        root = os.fspath(audio) if isinstance(audio, (str, os.PathLike)) and os.path.isdir(audio) else None
        return turn_plan(turns, [getattr(item, "path", item) for item in items], root, clips)

    @staticmethod
    def inputs(audio, sample_rate, name):
        """What predict_folder takes: file paths, or one Clip of an array's mono samples."""
        if isinstance(audio, np.ndarray):
            if sample_rate is None or not sample_rate > 0:
                raise UserError("an array of samples needs its sample_rate (samples per second)")
            if audio.ndim not in (1, 2) or audio.size == 0:
                raise UserError(f"an array of samples must be (n,) or (n, channels) and not empty, "
                                f"got shape {audio.shape}")
            samples = np.asarray(audio, dtype=np.float32)
            if samples.ndim == 2:
                samples = samples.mean(axis=1)
            return [prediction.Clip(name, samples, int(sample_rate))]
        paths = [os.fspath(audio)] if isinstance(audio, (str, os.PathLike)) else [os.fspath(p) for p in audio]
        if len(paths) == 1 and os.path.isdir(paths[0]):
            paths = walk_audio(paths[0])[0]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise UserError(f"{len(missing)} audio file(s) not found: {', '.join(missing[:3])}")
        if not paths:
            raise UserError("no audio files to predict")
        return paths
