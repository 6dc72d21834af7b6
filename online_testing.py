"""Test a trained model: Test1 (or --split) CCC of the checkpoint that matches the flags (method §7).

    python online_testing.py -ep 30 -batch 64 -emo Val -nc 10 -mt Temp-Triplet

Every Test1 turn is chunked and run through the model; a turn's prediction is
the mean of its chunk predictions, mapped back to the label scale.
"""
import argparse
import os

import numpy as np
import torch

from dataloader import CACHE_DTYPES, LabelledTurns, batches
from deepemocluster.corpus import CACHE_DIR, FEATURES_DIR, LABELS_CSV
from deepemocluster.features import load_norm_term
from deepemocluster.labels import read_labels
from model import checkpoint_name, load_model, predict_batch, prepare_for_inference
from deepemocluster.model_flags import add_release_flag, apply_release
from deepemocluster.compute import configure_backends, inference_settings, seed_everything, use_channels_last
from utils import TEST_SPLIT, add_model_args, ccc_metric, progress, run_cli, save_json

TEST_BATCH = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--features", default=FEATURES_DIR, help="folder of .mat feature files")
    p.add_argument("--labels", default=LABELS_CSV, help="labels_concensus.csv")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where the chunk caches are kept")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32")
    p.add_argument("--seed", type=int, default=0, help="torch and numpy seed")
    p.add_argument("--split", default=TEST_SPLIT,
                   help="any labelled split of the labels file: Test1 (default), Test2, Development, …")
    p.add_argument("--result-json", metavar="PATH", help="also write the result as JSON to PATH")
    defaults = add_release_flag(p)
    args = p.parse_args(argv)
    return apply_release(args, defaults, emotion=args.emo_attr)   # -emo picks the release's K and N


def test_ccc(args):
    """(CCC, de-normalised predictions, labels) of the matching checkpoint on a split."""
    seed_everything(args.seed)
    settings = inference_settings(args.device, args.precision)
    configure_backends(settings.device)
    read_labels(args.labels, args.split, (args.emo_attr,))   # a split without labels stops here
    norm = load_norm_term(args.norm_dir, (args.emo_attr,), args.labels, args.features)
    name = checkpoint_name(args.epochs, args.batch_size, args.num_clusters, args.emo_attr,
                           args.model_type, args.unlabel_size)
    model = load_model(os.path.join(args.model_dir, name), args.model_type, args.num_clusters)
    model = prepare_for_inference(model, settings.device, use_channels_last(args.precision))
    data = LabelledTurns(args.split, args.labels, args.features, norm, args.emo_attr,
                         args.cache_dir, args.cache_dtype, whole_short_turns=True)
    pred = np.empty(len(data))
    whole = set(data.whole_turns)
    order = np.array([i for i in range(len(data)) if i not in whole], dtype=np.int64)
    for idx, chunks in progress(batches(data.cache, order, TEST_BATCH, device=settings.device), desc=args.split,
                                total=-(-len(order) // TEST_BATCH), leave=False):
        pred[idx] = predict_batch([model], chunks, settings)[0]
    for i in data.whole_turns:   # 53–61 frames: every chunk the whole turn (method §4)
        chunks = torch.from_numpy(data.cache.read_unpadded(i))
        pred[i] = predict_batch([model], chunks, settings)[0][0]
    pred = pred * data.label_std + data.label_mean
    return ccc_metric(pred, data.labels), pred, data.labels


def write_result(path, args, ccc, n_turns):
    """The test result as JSON, for scripts (reproduce.py) that collect results."""
    save_json(path, {"split": args.split, "ccc": ccc, "turns": n_turns, "epochs": args.epochs,
                     "batch": args.batch_size, "clusters": args.num_clusters,
                     "model_type": args.model_type, "emotion": args.emo_attr,
                     "unlabel": args.unlabel_size, "precision": args.precision})


def main(argv=None):
    args = parse_args(argv)
    ccc, pred, _ = test_ccc(args)
    print(f"Epochs: {args.epochs}  Batch: {args.batch_size}  Clusters: {args.num_clusters}  "
          f"Model: {args.model_type}  Emotion: {args.emo_attr}"
          f"{f'  Unlabelled: {args.unlabel_size}' if args.unlabel_size else ''}")
    print(f"{args.split} CCC ({len(pred)} turns): {ccc:.4f}")
    if args.result_json:
        write_result(args.result_json, args, ccc, len(pred))


if __name__ == "__main__":
    run_cli(main)
