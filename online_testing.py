"""Test a trained model: Test1 CCC of the checkpoint that matches the flags (SPEC §7).

    python online_testing.py -ep 30 -batch 64 -emo Val -nc 10 -mt Temp-Triplet

Every Test1 turn is chunked and run through the model; a turn's prediction is
the mean of its chunk predictions, mapped back to the label scale.
"""
import argparse
import os

import numpy as np

from dataloader import CACHE_DTYPES, LabelledTurns, batches
from model import checkpoint_name, load_model, predict_batch, prepare_for_inference
from utils import (add_model_args, ccc_metric, configure_backends, load_norm_term, pick_device,
                   progress, run_cli, seed_everything, use_bf16, use_channels_last)

# Data paths: edit these, or give them on the command line.
FEATURES_DIR = "./demo_corpus/Features"
LABELS_CSV = "./demo_corpus/Labels/labels_concensus.csv"
CACHE_DIR = "./cache"
TEST_BATCH = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--features", default=FEATURES_DIR, help="folder of .mat feature files")
    p.add_argument("--labels", default=LABELS_CSV, help="labels_concensus.csv")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where the chunk caches are kept")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32")
    p.add_argument("--seed", type=int, default=0, help="torch and numpy seed")
    p.add_argument("--split", default="Test1", help="split to test on (default Test1)")
    return p.parse_args(argv)


def test_ccc(args):
    """(CCC, de-normalised predictions, labels) of the matching checkpoint on a split."""
    seed_everything(args.seed)
    device = pick_device(args.device)
    bf16 = use_bf16(args.precision, device, training=False)
    configure_backends(device, bf16)
    name = checkpoint_name(args.epochs, args.batch_size, args.num_clusters, args.emo_attr,
                           args.model_type, args.unlabel_size)
    model = load_model(os.path.join(args.model_dir, name), args.model_type, args.num_clusters)
    model = prepare_for_inference(model, device, use_channels_last(args.precision))
    norm = load_norm_term(args.norm_dir, (args.emo_attr,))
    data = LabelledTurns(args.split, args.labels, args.features, norm, args.emo_attr,
                         args.cache_dir, args.cache_dtype)
    pred = np.empty(len(data))
    for idx, chunks in progress(batches(data.cache, np.arange(len(data)), TEST_BATCH),
                                desc=args.split, total=-(-len(data) // TEST_BATCH), leave=False):
        pred[idx] = predict_batch([model], chunks, device, bf16)[0]
    pred = pred * data.label_std + data.label_mean
    return ccc_metric(pred, data.labels), pred, data.labels


def main(argv=None):
    args = parse_args(argv)
    ccc, pred, _ = test_ccc(args)
    print(f"Epochs: {args.epochs}  Batch: {args.batch_size}  Clusters: {args.num_clusters}  "
          f"Model: {args.model_type}  Emotion: {args.emo_attr}"
          f"{f'  Unlabelled: {args.unlabel_size}' if args.unlabel_size else ''}")
    print(f"{args.split} CCC ({len(pred)} turns): {ccc:.4f}")


if __name__ == "__main__":
    run_cli(main)
