"""Predict arousal, dominance and valence for every WAV under a folder (SPEC §7).

    python prediction_process.py --input WAV_DIR --output pred_result.csv -mt Temp-Triplet

Features as in feat_extract.py, normalised with NormTerm, chunked, run
through the three attribute models of one temporal type. Writes a CSV with
File_Name, Aro-Score, Dom-Score, Val-Score, one row per file in sorted walk
order; files that cannot be read are listed with the reason in
`<output>_errors.csv` next to it.
"""
import argparse
import csv
import os
import time
import warnings

import numpy as np
import torch

from model import checkpoint_name, load_model, predict_batch, prepare_for_inference
from utils import (DEFAULT_CLUSTERS, EMOTIONS, FRAMES_PER_CHUNK, UserError, add_model_args, at_least, atomic_path,
                   chunk_turn, configure_backends, extract_features, feature_pool, load_norm_term,
                   normalise_features, pick_device, progress, run_cli, seed_everything, use_bf16,
                   use_channels_last, walk_audio)

# Data paths: edit these, or give them on the command line.
INPUT_DIR = "./demo_corpus/Predict"
OUTPUT_CSV = "./pred_result.csv"
SCORE_COLUMNS = {"Act": "Aro-Score", "Dom": "Dom-Score", "Val": "Val-Score"}
FILES_PER_BLOCK = 256
INFERENCE_BATCH = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=INPUT_DIR, help="folder searched recursively for .wav files")
    p.add_argument("--output", default=OUTPUT_CSV, help="the CSV to write")
    add_model_args(p, emotion=False, clusters=False)
    p.add_argument("-nc", "--num_clusters", type=cluster_counts, default=[DEFAULT_CLUSTERS] * 3,
                   help="clusters K of the models: one K, or Act,Dom,Val (e.g. 30,30,10 for the "
                        "authors' semi-supervised Temp-Trans release); default 10")
    p.add_argument("--workers", type=int, default=1, help="feature-extraction processes")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def cluster_counts(text):
    """-nc: one K for all three models, or three comma-separated (Act,Dom,Val)."""
    parts = text.split(",")
    if len(parts) not in (1, len(EMOTIONS)):
        raise argparse.ArgumentTypeError(f"-nc takes one K or three (Act,Dom,Val), got {text!r}")
    ks = [at_least(2, "-nc")(part) for part in parts]
    return ks * len(EMOTIONS) if len(ks) == 1 else ks


def load_attribute_models(args, device, bf16):
    models = []
    for emo, k in zip(EMOTIONS, args.num_clusters):
        name = checkpoint_name(args.epochs, args.batch_size, k, emo, args.model_type,
                               args.unlabel_size)
        model = load_model(os.path.join(args.model_dir, name), args.model_type, k)
        models.append(prepare_for_inference(model, device, use_channels_last(args.precision)))
    return models


def safe_features(path):
    """(features, None), or (None, reason) for a file that cannot be used: never raises."""
    try:
        return extract_features(path), None
    except Exception as err:  # one bad file is reported, the others still predicted
        return None, str(err) or type(err).__name__


def predict_folder(wavs, models, norm, device, bf16, workers=1):
    """(rows of File_Name + three scores, errors of File_Name + reason), in the order of `wavs`.

    Works through the files in blocks, so memory does not grow with the folder.
    """
    rows, errors, short = [], [], []
    pool = feature_pool(workers) if workers > 1 else None
    bar = progress(total=len(wavs), desc="predict", unit="file")
    try:
        for start in range(0, len(wavs), FILES_PER_BLOCK):
            block = wavs[start:start + FILES_PER_BLOCK]
            feats = pool.map(safe_features, block, chunksize=4) if pool else map(safe_features, block)
            names, chunks = [], []
            for wav, (feat, reason) in zip(block, feats):
                if feat is None:
                    errors.append((os.path.basename(wav), reason))
                    continue
                names.append(os.path.basename(wav))
                if feat.shape[0] < FRAMES_PER_CHUNK:
                    short.append(names[-1])
                chunks.append(chunk_turn(normalise_features(feat, norm["feat_mean"], norm["feat_std"])))
            scores = [[] for _ in EMOTIONS]
            for i in range(0, len(chunks), INFERENCE_BATCH):
                batch = torch.from_numpy(np.stack(chunks[i:i + INFERENCE_BATCH]))
                for s, pred in zip(scores, predict_batch(models, batch, device, bf16)):
                    s.append(pred)
            if names:
                denorm = [np.concatenate(s) * norm[f"{e}_std"] + norm[f"{e}_mean"]
                          for s, e in zip(scores, EMOTIONS)]
                rows += [(n,) + tuple(float(d[j]) for d in denorm) for j, n in enumerate(names)]
            bar.update(len(block))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    if short:
        warnings.warn(f"{len(short)} file(s) shorter than {FRAMES_PER_CHUNK} frames were padded to "
                      f"one chunk, e.g. {', '.join(short[:3])}", stacklevel=2)
    return rows, errors


def write_csv(path, header, rows):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def error_report_path(output):
    root, _ = os.path.splitext(output)
    return root + "_errors.csv"


def main(argv=None):
    args = parse_args(argv)
    seed_everything(0)
    if not os.path.isdir(args.input):
        raise UserError(f"input folder not found: {args.input}")
    wavs, _ = walk_audio(args.input)
    if not wavs:
        raise UserError(f"no .wav files found under {args.input}")
    device = pick_device(args.device)
    bf16 = use_bf16(args.precision, device, training=False)
    configure_backends(device, bf16)
    norm = load_norm_term(args.norm_dir)
    models = load_attribute_models(args, device, bf16)
    t0 = time.time()
    rows, errors = predict_folder(wavs, models, norm, device, bf16, args.workers)
    write_csv(args.output, ["File_Name"] + [SCORE_COLUMNS[e] for e in EMOTIONS], rows)
    report = error_report_path(args.output)
    if errors:
        write_csv(report, ["File_Name", "Reason"], errors)
    elif os.path.exists(report):
        os.remove(report)
    print(f"{len(rows)} of {len(wavs)} file(s) predicted with {args.model_type} models "
          f"in {time.time() - t0:.1f}s: {args.output}")
    if errors:
        print(f"{len(errors)} file(s) could not be read, listed with the reason in {report}")
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
