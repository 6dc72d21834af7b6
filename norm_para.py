"""Compute the normalisation terms ("NormTerm", method §3) from the Train split.

    python norm_para.py --labels labels_concensus.csv --features FEATURE_DIR --norm-dir ./NormTerm

Per-band mean and standard deviation over all frames of all Train files, and
the mean and standard deviation of each attribute's Train labels, saved as
`.mat` files holding `normal_para`. Training regresses (label − mean) / std and
testing and prediction map the outputs back with the same mean and std, so labels
on any numeric scale work, and predictions come back on the corpus's own scale.
"""
import argparse

import numpy as np

from dataloader import load_features
from deepemocluster.corpus import FEATURES_DIR, LABELS_CSV, NORM_DIR
from deepemocluster.features import save_norm_term
from deepemocluster.labels import feature_paths, label_norm_term
from utils import EMOTIONS, N_MELS, UserError, progress, run_cli



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", default=LABELS_CSV, help="labels_concensus.csv")
    p.add_argument("--features", default=FEATURES_DIR, help="folder of .mat feature files")
    p.add_argument("--norm-dir", default=NORM_DIR, help="where the NormTerm files are written")
    return p.parse_args(argv)


def feature_mean_std(paths):
    """Per-band mean and population std over all frames of all files, one file at a time
    (pairwise combination of per-file moments, so memory does not grow with the corpus)."""
    count, mean, m2 = 0, np.zeros(N_MELS), np.zeros(N_MELS)
    for path in progress(paths, desc="NormTerm", unit="file"):
        x = load_features(path).astype(np.float64)
        n = x.shape[0]
        if n == 0:
            continue
        m = x.mean(axis=0)
        delta = m - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + ((x - m) ** 2).sum(axis=0) + delta ** 2 * count * n / total
        count = total
    if count == 0:
        raise UserError("the Train feature files hold no frames")
    return mean, np.sqrt(m2 / count)


def compute_norm_term(labels_csv, features_dir):
    stems, labels = label_norm_term(labels_csv)
    mean, std = feature_mean_std(feature_paths(features_dir, stems))
    return {"feat_mean": mean, "feat_std": std, **labels}, len(stems)



def main(argv=None):
    args = parse_args(argv)
    term, n = compute_norm_term(args.labels, args.features)
    save_norm_term(term, args.norm_dir)
    print(f"NormTerm from {n} Train turns written to {args.norm_dir}: "
          + ", ".join(f"{e} {term[e + '_mean']:.3f}±{term[e + '_std']:.3f}" for e in EMOTIONS))


if __name__ == "__main__":
    run_cli(main)
