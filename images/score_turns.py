"""How well predicted speaking turns match a recording's true turns (make_long_recording.py's
truth CSV): the true turns found, the median boundary error, and the Test1-style CCC of the
per-turn predictions against the true turns' labels.

    python images/score_turns.py demo_corpus/Long/long_recording_truth.csv long_turns.csv

A true turn is found when the predicted row that overlaps it most covers it with an
intersection over union of at least FOUND_OVERLAP; its boundary errors are |ΔStart| and |ΔEnd|
of that row, and that row's scores are its prediction.
"""
import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import ccc_metric, run_cli  # noqa: E402

FOUND_OVERLAP = 0.5
LABELS = {"Act": "Aro-Score", "Dom": "Dom-Score", "Val": "Val-Score"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def overlap(a, b):
    """Intersection over union of two (start, end) spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def score(truth, rows):
    """{found, true, predicted, median_boundary_error_s, ccc: {Act, Dom, Val}}."""
    spans = [(float(r["Start"]), float(r["End"])) for r in rows]
    found = []
    for turn in truth:
        span = (float(turn["Start"]), float(turn["End"]))
        best = max(range(len(spans)), key=lambda j: overlap(span, spans[j]), default=None)
        if best is not None and overlap(span, spans[best]) >= FOUND_OVERLAP:
            found.append((turn, span, rows[best], spans[best]))
    errors = [abs(s[k] - p[k]) for _, s, _, p in found for k in (0, 1)]
    ccc = {emo: ccc_metric([float(r[col]) for _, _, r, _ in found], [float(t[emo]) for t, _, _, _ in found])
           for emo, col in LABELS.items()} if len(found) > 1 else {}
    return {"found": len(found), "true": len(truth), "predicted": len(rows),
            "median_boundary_error_s": float(np.median(errors)) if errors else None, "ccc": ccc}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("truth", help="make_long_recording.py's truth CSV")
    p.add_argument("predictions", help="prediction_process.py's CSV with Start and End (--turns or --window)")
    args = p.parse_args(argv)
    result = score(read(args.truth), read(args.predictions))
    print(f"{result['found']} of {result['true']} true turns found ({result['predicted']} predicted rows); "
          f"median boundary error {result['median_boundary_error_s']:.3f} s; CCC "
          + ", ".join(f"{emo} {value:.4f}" for emo, value in result["ccc"].items()))
    return 0


if __name__ == "__main__":
    run_cli(main)
