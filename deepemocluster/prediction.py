"""The prediction engine (method §7): what predicts (the three attribute models in PyTorch with
their NormTerm, or the files of export_onnx.py through ONNX Runtime), the turns of a folder
(whole files, or windows of them), and their scores in blocks of bounded memory.
prediction_process.py and the Predictor are thin layers over it.
"""
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch

from deepemocluster.compute import Settings, configure_backends, inference_settings, use_channels_last
from deepemocluster.features import (chunk_turn, extract_features, feature_pool, is_whole_turn_chunked,
                                     load_norm_term, short_turn_warning)
from deepemocluster.model_flags import attribute_checkpoints
from deepemocluster.time_windows import audio_seconds, clip_windows, read_windows, window_features
from model import EMBED_DIM, load_model, predict_batch, prepare_for_inference
from utils import (CHUNKS_PER_TURN, EMOTIONS, FRAMES_PER_CHUNK, SAMPLE_RATE, SHORTEST_TRAINING_TURN_SECONDS,
                   progress)

SCORE_COLUMNS = {"Act": "Aro-Score", "Dom": "Dom-Score", "Val": "Val-Score"}
TURNS_PER_BLOCK = 256            # files or windows whose features are held at once
SAMPLES_PER_BLOCK = 2 ** 24      # and at most this many window samples (64 MiB as float32)
INFERENCE_BATCH = 64
SECONDS_DECIMALS = 3             # Start and End of a window: milliseconds
# CHUNKS_PER_TURN chunks of 0.992 s: a longer file is summarised by chunks spread over it, not covered.
LONG_RECORDING_SECONDS = 11.0


# --- what predicts ------------------------------------------------------------------------------
def load_attribute_models(args, settings):
    """The Act, Dom and Val models of the flags, ready for inference on the device of `settings`."""
    return [prepare_for_inference(load_model(path, args.model_type, k), settings.device,
                                  use_channels_last(settings.precision))
            for _, k, _, path in attribute_checkpoints(args)]


def load_runner(args):
    """What predicts: the exported files of --onnx through ONNX Runtime, or the checkpoints
    the flags pick in PyTorch, with their NormTerm."""
    if args.onnx:
        from deepemocluster.onnx_runner import OnnxModels

        return OnnxModels(args.onnx)
    settings = inference_settings(args.device, args.precision)
    configure_backends(settings.device)
    norm = load_norm_term(args.norm_dir)
    return TorchModels(load_attribute_models(args, settings), norm, settings)


def models_title(args, runner):
    """What made the predictions: the temporal type, and the release or the model folder
    (and whether they are the shipped demo models)."""
    from deepemocluster.demo_models import DEMO_TITLE, are_demo_models

    if args.onnx:
        title = f"{runner.temporal_type} models ({runner.source})"
    else:
        title = f"{args.model_type} models ({f'release {args.release}' if args.release else args.model_dir})"
    return title + (DEMO_TITLE if are_demo_models(args, runner) else "")


# --- turns: whole files, or windows of them --------------------------------------------------------
class Turn(NamedTuple):
    """What is predicted as one turn: a whole file, or the window or speaking turn [start,
    end) seconds of it."""
    path: str
    start: float = None
    end: float = None
    last: bool = True           # the file's last turn
    speaker: str = None         # a speaking turn's speaker, where the turns file names one
    kind: str = "window"        # or "turn" (--turns): Start and End exact to the sample

    @property
    def name(self):
        return os.path.basename(self.path)

    @property
    def span(self):
        """'window 0.000–11.000 s' (or 'turn …'), or None for a whole file."""
        if self.start is None:
            return None
        return f"{self.kind} {self.start:.{SECONDS_DECIMALS}f}–{self.end:.{SECONDS_DECIMALS}f} s"

    def columns(self, speakers=False):
        """Its CSV columns before the scores: Start, End (a window's to the millisecond, a
        speaking turn's exact) and, with `speakers`, Speaker; none for a whole file."""
        if self.start is None:
            return ()
        if self.kind == "window":
            return round(self.start, SECONDS_DECIMALS), round(self.end, SECONDS_DECIMALS)
        return (self.start, self.end) + ((self.speaker,) if speakers else ())

    def describe(self, reason):
        """A reason for the errors CSV, naming the window."""
        return reason if self.span is None else f"{self.span}: {reason}"


class Clip(NamedTuple):
    """Audio already in memory (deepemocluster/predictor.py), predicted as a file of these samples would be."""
    path: str                   # the name its rows get
    samples: np.ndarray         # mono float32
    rate: int


def turn_sources(paths, window, hop, errors, turn_plan=None):
    """(Turn, (path, samples, sample rate)) of every turn: whole files (read by the feature
    workers), or each window of each file, or with `turn_plan` each speaking turn, read
    forward from disk; a Clip's from memory. A file whose audio cannot be read goes to `errors`."""
    if turn_plan is not None:
        yield from speaking_turn_sources(paths, turn_plan, errors)
        return
    for path in paths:
        if isinstance(path, Clip):
            spans = [(None, None, path.samples, path.rate, True)] if window is None else \
                clip_windows(path.samples, path.rate, window, hop)
            for start, end, samples, rate, last in spans:
                yield Turn(path.path, start, end, last), (path.path, samples, rate)
            continue
        if window is None:
            yield Turn(path), (path, None, None)
            continue
        try:
            for start, end, samples, rate, last in read_windows(path, window, hop):
                yield Turn(path, start, end, last), (path, samples, rate)
        except Exception as err:  # one bad file is reported, the others still predicted
            errors.append((os.path.basename(path),
                           f"unreadable audio ({type(err).__name__}: {str(err).strip() or 'no detail'})"))


def speaking_turn_sources(paths, turn_plan, errors):
    """turn_sources of --turns: "vad" (the turns the detector finds) or turn_files.GivenTurns.
    A file without speech goes to `errors` ("no speech found")."""
    from deepemocluster.turn_audio import VAD_TURNS, NoSpeech, recording_turns
    from deepemocluster.vad import SpeechDetector

    detector = SpeechDetector() if turn_plan == VAD_TURNS else None
    for path in paths:
        name = path.path if isinstance(path, Clip) else path
        try:
            for given, samples, rate, last in recording_turns(path, turn_plan, detector):
                yield (Turn(name, given.start / SAMPLE_RATE, given.end / SAMPLE_RATE, last, given.speaker, "turn"),
                       (name, samples, rate))
        except NoSpeech as err:
            errors.append((os.path.basename(name), str(err)))
        except Exception as err:  # one bad file is reported, the others still predicted
            errors.append((os.path.basename(name),
                           f"unreadable audio ({type(err).__name__}: {str(err).strip() or 'no detail'})"))


def turn_features(source):
    """(features, None, seconds) of a file or window, or (None, reason, None): never raises."""
    path, samples, rate = source
    try:
        if samples is None:
            return extract_features(path), None, audio_seconds(path)
        return window_features(samples, rate), None, len(samples) / rate
    except Exception as err:  # one bad file or window is reported, the others still predicted
        return None, str(err) or type(err).__name__, None


def blocks(items):
    """Lists of (Turn, source) holding at most TURNS_PER_BLOCK turns and, beyond the
    first, SAMPLES_PER_BLOCK window samples."""
    block, held = [], 0
    for item in items:
        samples = item[1][1]
        size = 0 if samples is None else samples.size
        if block and (len(block) == TURNS_PER_BLOCK or held + size > SAMPLES_PER_BLOCK):
            yield block
            block, held = [], 0
        block.append(item)
        held += size
    if block:
        yield block


# --- prediction --------------------------------------------------------------------------------------
class Prediction(NamedTuple):
    """What predict_folder returns (rows first, as before it returned (rows, errors))."""
    rows: list                  # File_Name[, Start, End], Aro-Score, Dom-Score, Val-Score
    errors: list                # File_Name, Reason
    turns: list                 # the Turn of each row
    embeddings: list            # per attribute model, (rows, 256) float32; None unless asked for
    long_files: list            # (File_Name, seconds) of whole files longer than LONG_RECORDING_SECONDS
    short_turns: list           # (Turn, seconds) of files or windows shorter than any training turn


class TorchModels(NamedTuple):
    """The three attribute models in PyTorch, the NormTerm they were trained with and where
    they run (compute.inference_settings; onnx_runner.OnnxModels is the same for exported files)."""
    models: list
    norm: dict
    settings: Settings

    def predict(self, feats, embeddings=False):
        """Each model's scores on the label scale (models × turns) for a list of raw (frames,
        128) turns and, with `embeddings`, their turn embeddings (models × turns × 256)."""
        chunked = [chunk_turn(self.norm["features"].apply(feat), whole_short_turns=True) for feat in feats]
        scores, vectors = run_models(chunked, self.models, self.settings, embeddings)
        return np.stack([scores[m] * self.norm[f"{e}_std"] + self.norm[f"{e}_mean"]
                         for m, e in enumerate(EMOTIONS)]), vectors


def run_models(chunked, models, settings, embeddings=False):
    """Each model's normalised predictions (models × turns) for a list of chunked turns and,
    with `embeddings`, their 256-d turn embeddings (models × turns × 256).

    (11, 62, 128) turns go in batches; whole short turns, (11, T, 128) with T < 62, one at a time.
    """
    full = [i for i, c in enumerate(chunked) if c.shape[1] == FRAMES_PER_CHUNK]
    short = [i for i, c in enumerate(chunked) if c.shape[1] != FRAMES_PER_CHUNK]
    groups = [full[i:i + INFERENCE_BATCH] for i in range(0, len(full), INFERENCE_BATCH)]
    groups += [[i] for i in short]
    scores = np.empty((len(models), len(chunked)), np.float32)
    vectors = np.empty((len(models), len(chunked), EMBED_DIM), np.float32) if embeddings else None
    for idx in groups:
        batch = torch.from_numpy(np.stack([chunked[i] for i in idx]))
        for m, out in enumerate(predict_batch(models, batch, settings, embeddings)):
            if embeddings:
                scores[m, idx], vectors[m, idx] = out
            else:
                scores[m, idx] = out
    return scores, vectors


def score_rows(turns, scores, speakers=False):
    """CSV rows: File_Name[, Start, End[, Speaker]] and the three scores (models × turns, label scale)."""
    return [(turn.name,) + turn.columns(speakers) + tuple(float(s[j]) for s in scores)
            for j, turn in enumerate(turns)]


def predict_folder(paths, runner, workers=1, window=None, hop=None, embeddings=False, turn_plan=None):
    """Predictions of every file (or, with `window`, every window of every file; with `turn_plan`,
    "vad" or turn_files.GivenTurns, every speaking turn) in `paths` by `runner` (TorchModels
    or onnx_runner.OnnxModels).

    Works through the turns in blocks, so memory grows neither with the folder nor with
    the length of a recording.
    """
    rows, errors, turns, long_files, short_turns, whole, padded = [], [], [], [], [], [], []
    vectors = [[] for _ in EMOTIONS]
    pool = feature_pool(workers) if workers > 1 else None
    bar = progress(total=len(paths), desc="predict", unit="file")
    try:
        for block in blocks(turn_sources(paths, window, hop, errors, turn_plan)):
            sources = [source for _, source in block]
            feats = pool.map(turn_features, sources, chunksize=4) if pool else map(turn_features, sources)
            kept, kept_feats = [], []
            for (turn, _), (feat, reason, duration) in zip(block, feats):
                if feat is None:
                    errors.append((turn.name, turn.describe(reason)))
                    continue
                if feat.shape[0] < FRAMES_PER_CHUNK:
                    (whole if is_whole_turn_chunked(feat.shape[0]) else padded).append(turn.name)
                if turn.start is None and duration > LONG_RECORDING_SECONDS:
                    long_files.append((turn.name, duration))
                if duration < SHORTEST_TRAINING_TURN_SECONDS:
                    short_turns.append((turn, duration))
                kept.append(turn)
                kept_feats.append(feat)
            if kept:
                scores, emb = runner.predict(kept_feats, embeddings)
                rows += score_rows(kept, scores, getattr(turn_plan, "speakers", False))
                turns += kept
                if embeddings:
                    for m in range(len(EMOTIONS)):
                        vectors[m].append(emb[m])
            bar.update(sum(turn.last for turn, _ in block))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    if whole or padded:   # with --window, only a file shorter than one chunk: its one window
        warnings.warn(short_turn_warning(whole, padded, "file(s)" if turn_plan is None else "turn(s)"), stacklevel=2)
    if embeddings:
        vectors = [np.concatenate(v) if v else np.zeros((0, EMBED_DIM), np.float32) for v in vectors]
    return Prediction(rows, errors, turns, vectors if embeddings else None, long_files, short_turns)



# --- what the rows and the summary say --------------------------------------------------------
def csv_header(windowed, speakers=False):
    """The output CSV's columns: File_Name[, Start, End[, Speaker]], Aro-Score, Dom-Score, Val-Score."""
    return (["File_Name"] + (["Start", "End"] if windowed else []) + (["Speaker"] if speakers else [])
            + [SCORE_COLUMNS[e] for e in EMOTIONS])


def long_recording_warning(long_files):
    """The summary's warning about files summarised as one turn although they are long."""
    name, duration = max(long_files, key=lambda f: f[1])
    return (f"{len(long_files)} file(s) longer than {LONG_RECORDING_SECONDS:g} s were each "
            f"summarised as one turn ({CHUNKS_PER_TURN} chunks of about 1 s spread over the file); "
            f"the longest is {name} ({duration:.1f} s). For emotion over time use "
            f"--window {LONG_RECORDING_SECONDS:g}")


def short_recording_warning(short_turns, window=None):
    """The summary's warning about files (or windows) shorter than the shortest training turn."""
    turn, duration = min(short_turns, key=lambda t: t[1])
    advice = "" if window is None or window >= SHORTEST_TRAINING_TURN_SECONDS else \
        f" (--window {window:g} is shorter than that)"
    what = "file(s)" if turn.start is None else f"{turn.kind}(s)"
    return (f"{len(short_turns)} {what} shorter "
            f"than {SHORTEST_TRAINING_TURN_SECONDS:g} s, the shortest turn the models were trained on, "
            f"were predicted all the same{advice}; the shortest is {turn.name}"
            f"{'' if turn.span is None else ', ' + turn.span} ({duration:.2f} s)")
