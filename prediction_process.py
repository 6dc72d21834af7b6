"""Predict arousal, dominance and valence for every audio file under a folder (method §7).

    python prediction_process.py --input AUDIO_DIR --output pred_result.csv -mt Temp-Triplet
    python prediction_process.py --release v1.8-ssl --input AUDIO_DIR --output pred_result.csv
    python prediction_process.py --input AUDIO_DIR --window 11 --plot plots/ --embeddings emb/
    python prediction_process.py --input AUDIO_DIR --turns vad --plot plots/   # speaking turns
    python prediction_process.py --input AUDIO_DIR --turns diarisation.rttm     # turns of a diariser
    python prediction_process.py --onnx onnx/ --input AUDIO_DIR    # files of export_onnx.py

WAV, FLAC, OGG and MP3 files at any sample rate, mono or stereo. Features as in
feat_extract.py, normalised with NormTerm, chunked, run through the three attribute
models of one temporal type (in PyTorch, or with --onnx through ONNX Runtime). Writes
a CSV with File_Name, Aro-Score, Dom-Score, Val-Score, one row per file in sorted walk
order; with --window, one row per window (File_Name, Start, End in seconds, then the
scores), each window predicted as one turn; with --turns, one row per speaking turn (File_Name,
Start, End exact to the sample[, Speaker], then the scores), found by a voice activity detector
(vad) or read from a CSV or RTTM file. Files or windows that cannot be predicted, and files
without speech, are listed with the reason in `<output>_errors.csv` next to it.
"""
import csv
import os
import time

import numpy as np

from deepemocluster import prediction_flags
from deepemocluster.corpus import PREDICT_DIR
from deepemocluster.demo_models import are_demo_models, demo_models_warning
from deepemocluster.features import AUDIO_EXTENSIONS, walk_audio
from deepemocluster.compute import seed_everything
from deepemocluster.prediction import (csv_header, load_runner, long_recording_warning, models_title,
                                       predict_folder, short_recording_warning)
from deepemocluster.turn_audio import VAD_TURNS
from deepemocluster.turn_files import turn_plan
from model import EMBED_DIM
from utils import EMOTIONS, UserError, atomic_path, run_cli, save_npy

OUTPUT_CSV = "./pred_result.csv"


def parse_args(argv=None):
    return prediction_flags.parse_args(argv, __doc__, PREDICT_DIR, OUTPUT_CSV)


# --- outputs --------------------------------------------------------------------------------------------
def write_csv(path, header, rows):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def error_report_path(output):
    root, _ = os.path.splitext(output)
    return root + "_errors.csv"


def write_embeddings(folder, result, header):
    """DIR/embeddings_{Act,Dom,Val}.npy (rows × 256 float32) and DIR/index.csv (the CSV's
    columns before the scores), row i ↔ row i."""
    for emo, vectors in zip(EMOTIONS, result.embeddings):
        save_npy(os.path.join(folder, f"embeddings_{emo}.npy"), vectors.astype(np.float32))
    described = len(header) - len(EMOTIONS)
    write_csv(os.path.join(folder, "index.csv"), ["row"] + header[:described],
              [(i,) + tuple(row[:described]) for i, row in enumerate(result.rows)])


def write_plots(folder, result, title, norm):
    """One PNG per file (its base name + .png) of the windows' (or turns') scores over time;
    returns the count."""
    from deepemocluster.plots import label_band, plot_over_time

    by_file = {}
    for turn, row in zip(result.turns, result.rows):
        by_file.setdefault(turn.path, []).append((turn.start, turn.end) + tuple(row[-len(EMOTIONS):]))
    used = {}
    for path, rows in by_file.items():
        name = os.path.basename(path)
        used[name] = used.get(name, 0) + 1
        png = name + (f"-{used[name]}" if used[name] > 1 else "") + ".png"   # same name, other folder
        spans = [row[:2] for row in rows]
        scores = [row[2:] for row in rows]
        plot_over_time(os.path.join(folder, png), spans, scores, f"{name}: {title}", label_band(norm))
    return len(by_file)


def main(argv=None):
    args = parse_args(argv)
    seed_everything(0)
    if not os.path.isdir(args.input):
        raise UserError(f"input folder not found: {args.input}")
    paths, others = walk_audio(args.input)
    if not paths:
        raise UserError(f"no .wav files found under {args.input}, nor any other audio file "
                        f"({', '.join(AUDIO_EXTENSIONS[1:])})")
    plan = turn_plan(args.turns, paths, args.input)
    if plan is not None and plan != VAD_TURNS:
        paths = [p for p in paths if p in plan.by_file]
    runner = load_runner(args)
    t0 = time.time()
    result = predict_folder(paths, runner, args.workers, args.window, args.hop,
                            embeddings=bool(args.embeddings), turn_plan=plan)
    windowed = args.window is not None or plan is not None
    header = csv_header(windowed, getattr(plan, "speakers", False))
    write_csv(args.output, header, result.rows)
    report = error_report_path(args.output)
    if result.errors:
        write_csv(report, ["File_Name", "Reason"], result.errors)
    elif os.path.exists(report):
        os.remove(report)
    predicted = len({turn.path for turn in result.turns})
    what = f"{predicted}" if not windowed else \
        f"{len(result.rows)} {'window' if plan is None else 'turn'}(s) of {predicted}"
    print(f"{what} of {len(paths)} file(s) predicted with {models_title(args, runner)} "
          f"in {time.time() - t0:.1f}s: {args.output}")
    if args.embeddings:
        write_embeddings(args.embeddings, result, header)
        print(f"turn embeddings ({len(result.rows)} row(s) × {EMBED_DIM} per attribute model): "
              f"{args.embeddings}")
    if args.plot:
        print(f"{write_plots(args.plot, result, models_title(args, runner), runner.norm)} plot(s): {args.plot}")
    if others:
        print(f"{len(others)} non-audio file(s) skipped")
    if are_demo_models(args, runner) and demo_models_warning(paths):
        print(f"warning: {demo_models_warning(paths)}")
    if result.long_files:
        print(f"warning: {long_recording_warning(result.long_files)}")
    if result.short_turns:
        print(f"warning: {short_recording_warning(result.short_turns, args.window)}")
    if result.errors:
        what = ("file(s) or window(s) could not be predicted" if args.window is not None else
                "file(s) could not be read" if plan is None else
                "file(s) or turn(s) could not be predicted or held no speech")
        print(f"{len(result.errors)} {what}, listed with the reason in {report}")
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
