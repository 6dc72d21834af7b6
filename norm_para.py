"""Compute the normalisation terms ("NormTerm", method §3) from the Train split.

    python norm_para.py --labels labels_concensus.csv --features FEATURE_DIR --norm-dir ./NormTerm

Per-band mean and standard deviation over all frames of all Train files, and
the mean and standard deviation of each attribute's Train labels, saved as
`.mat` files holding `normal_para`. Training regresses (label − mean) / std and
testing and prediction map the outputs back with the same mean and std, so labels
on any numeric scale work, and predictions come back on the corpus's own scale.
"""
import argparse
import os
from contextlib import ExitStack

import numpy as np

from dataloader import load_features
from deepemocluster.corpus import FEATURES_DIR, LABELS_CSV, NORM_DIR
from deepemocluster.features import FeatureNorm, norm_files
from deepemocluster.labels import feature_paths, read_labels
from utils import EMOTIONS, NORM_VAR, N_MELS, UserError, atomic_path, load_mat, progress, run_cli, write_mat



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
    stems, labels = read_labels(labels_csv, "Train", EMOTIONS)
    mean, std = feature_mean_std(feature_paths(features_dir, stems))
    term = {"features": FeatureNorm(mean, std)}
    for emo in EMOTIONS:
        term[f"{emo}_mean"] = float(np.mean(labels[emo]))
        term[f"{emo}_std"] = float(np.std(labels[emo]))
    return term, len(stems)


def save_norm_term(term, norm_dir):
    """Write the NormTerm files that change, all or none: each to a temporary file, renamed
    into place only once all are whole (a full disk leaves the old set, not a mix). A file
    that already holds the same values is left as it is."""
    paths = norm_files(norm_dir)
    features = term["features"]
    values = {"feat_mean": features.mean, "feat_std": features.std,
              **{key: value for key, value in term.items() if key != "features"}}
    with ExitStack() as renames:
        for key, value in values.items():
            value = np.asarray(value, dtype=np.float64).reshape(1, -1)
            if os.path.isfile(paths[key]):
                try:
                    if np.array_equal(load_mat(paths[key], NORM_VAR), value):
                        continue
                except Exception:
                    pass
            write_mat(renames.enter_context(atomic_path(paths[key])), NORM_VAR, value)
    return paths


def main(argv=None):
    args = parse_args(argv)
    term, n = compute_norm_term(args.labels, args.features)
    save_norm_term(term, args.norm_dir)
    print(f"NormTerm from {n} Train turns written to {args.norm_dir}: "
          + ", ".join(f"{e} {term[e + '_mean']:.3f}±{term[e + '_std']:.3f}" for e in EMOTIONS))


if __name__ == "__main__":
    run_cli(main)
