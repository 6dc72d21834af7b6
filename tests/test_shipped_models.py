"""The shipped demo models predict out of the box, and well, on unseen demo speech."""
import csv
import os
import subprocess
import sys

import numpy as np

import make_demo_corpus
from support import ROOT
from utils import ccc_metric


def test_shipped_models_predict_unseen_demo_turns(tmp_path):
    corpus = tmp_path / "corpus"
    # A new seed: speakers and turns the shipped models never saw.
    make_demo_corpus.main(["--out", str(corpus), "--seed", "7", "--train", "1",
                           "--validation", "1", "--test", "40", "--predict", "0"])
    out = tmp_path / "pred_result.csv"
    proc = subprocess.run([sys.executable, "prediction_process.py", "--input", str(corpus / "Audios"),
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "42 of 42 file(s) predicted with Temp-Triplet models" in proc.stdout
    with open(corpus / "Labels" / "labels_concensus.csv") as f:
        labels = {r["FileName"]: r for r in csv.DictReader(f)}
    with open(out) as f:
        rows = [r for r in csv.DictReader(f) if labels[r["File_Name"]]["Split_Set"] == "Test1"]
    assert len(rows) == 40
    for score, column, floor in (("Aro-Score", "EmoAct", 0.6), ("Dom-Score", "EmoDom", 0.5),
                                 ("Val-Score", "EmoVal", 0.15)):
        pred = np.array([float(r[score]) for r in rows])
        true = np.array([float(labels[r["File_Name"]][column]) for r in rows])
        assert ccc_metric(pred, true) > floor, score
        assert 1.0 <= pred.min() and pred.max() <= 7.0
    assert os.path.isfile(os.path.join(ROOT, "NormTerm", "feat_norm_means.mat"))
