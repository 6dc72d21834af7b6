"""The whole pipeline on a small demo corpus in the current MSP-Podcast layout (v1.12,
method §2): Audios/, Labels/labels_consensus.csv, splits Train, Development, Test1, Test2
and Test3, whose rows have audio but no labels.

feat_extract.py → norm_para.py → main.py (validation on Development, picked by itself)
→ online_testing.py on Test1 and Test2 → online_testing.py refuses Test3 →
prediction_process.py predicts Test3's audio. Every script runs through its main(argv)
under run_cli, as its `__main__` does; everything is written under tmp_path.
"""
import contextlib
import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

import feat_extract
import main as train_script
import make_demo_corpus
import norm_para
import online_testing
import prediction_process
from deepemocluster.features import load_norm_term
from support.cli import cli
from utils import EMOTIONS, LABEL_COLUMN

# A corpus small enough for a few seconds per script on 2 cores.
CORPUS_FLAGS = ["--release", "v1.12", "--train", "16", "--validation", "6", "--test", "6",
                "--test2", "5", "--test3", "3", "--predict", "0"]
SPLIT_SIZES = {"Train": 16, "Development": 6, "Test1": 6, "Test2": 5, "Test3": 3}
MODEL_FLAGS = ["-ep", "1", "-batch", "4", "-nc", "4", "-mt", "Temp-CNN"]
TEST_EMOTION = "Act"
LABELLED_TEST_SPLITS = ("Test1", "Test2")
UNLABELLED_SPLIT = "Test3"


def cli_output(script_main, argv):
    """(exit status, stdout) of cli(); stdout captured here, so module fixtures can use it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(script_main, argv)
    return code, out.getvalue()


def label_rows(labels_csv, split):
    """The rows of one split, read with the csv module (not the project's reader)."""
    with open(labels_csv, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["Split_Set"] == split]


def hand_ccc(pred, true):
    """method §1 with population statistics (method §7)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    cov = np.mean((pred - pred.mean()) * (true - true.mean()))
    return 2 * cov / (pred.var() + true.var() + (pred.mean() - true.mean()) ** 2)


def all_files(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, _, names in os.walk(folder) for n in names)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The corpus with its features and NormTerm, and the folders the scripts write to."""
    base = tmp_path_factory.mktemp("current_release")
    corpus = base / "demo_v112"
    with contextlib.redirect_stdout(io.StringIO()):
        assert make_demo_corpus.main(["--out", str(corpus), *CORPUS_FLAGS]) == 0
    paths = {"base": base, "audio": corpus / "Audios", "features": corpus / "Features",
             "labels": corpus / "Labels" / "labels_consensus.csv", "norm": base / "NormTerm",
             "models": base / "models", "cache": base / "cache"}
    assert cli_output(feat_extract.main, ["--input", paths["audio"], "--output", paths["features"]])[0] == 0
    assert cli_output(norm_para.main, ["--labels", paths["labels"], "--features", paths["features"],
                                       "--norm-dir", paths["norm"]])[0] == 0
    return paths


def data_flags(work):
    return ["--features", work["features"], "--labels", work["labels"], "--norm-dir", work["norm"],
            "--model-dir", work["models"], "--cache-dir", work["cache"]]


@pytest.fixture(scope="module")
def trained(work):
    """One 1-epoch Temp-CNN model per attribute (prediction needs all three): {emotion: stdout}."""
    printed = {}
    for emo in EMOTIONS:
        code, printed[emo] = cli_output(train_script.main,
                                        [*MODEL_FLAGS, "-emo", emo, *data_flags(work)])
        assert code == 0, printed[emo]
    return printed


def test_corpus_has_the_current_layout(work):
    assert sorted(os.listdir(work["labels"].parent)) == ["labels_consensus.csv"]
    assert len(os.listdir(work["audio"])) == sum(SPLIT_SIZES.values())
    assert len(os.listdir(work["features"])) == sum(SPLIT_SIZES.values())
    for split, size in SPLIT_SIZES.items():
        assert len(label_rows(work["labels"], split)) == size


def test_norm_term_comes_from_the_train_split(work):
    norm = load_norm_term(work["norm"])
    train = label_rows(work["labels"], "Train")
    for emo in EMOTIONS:
        labels = [float(row[LABEL_COLUMN[emo]]) for row in train]
        assert norm[f"{emo}_mean"] == pytest.approx(np.mean(labels), rel=1e-12)
        assert norm[f"{emo}_std"] == pytest.approx(np.std(labels), rel=1e-12)


def test_training_validates_on_development_by_itself(trained):
    for emo, printed in trained.items():
        line = next(line for line in printed.splitlines() if line.startswith("training "))
        assert (f"{SPLIT_SIZES['Train']} Train, {SPLIT_SIZES['Development']} Development turns"
                in line), line


@pytest.mark.parametrize("split", LABELLED_TEST_SPLITS)
def test_online_testing_on_a_labelled_test_split(work, trained, split):
    result = work["base"] / f"{split}.json"
    argv = [*MODEL_FLAGS, "-emo", TEST_EMOTION, "--split", split, *data_flags(work),
            "--result-json", result]
    code, printed = cli_output(online_testing.main, argv)
    assert code == 0, printed
    with open(result) as handle:
        reported = json.load(handle)
    assert reported["split"] == split and reported["turns"] == SPLIT_SIZES[split]
    assert np.isfinite(reported["ccc"])
    assert f"{split} CCC ({SPLIT_SIZES[split]} turns): {reported['ccc']:.4f}" in printed

    # The same CCC by hand, from the script's predictions and the labels read here.
    _, pred, _ = online_testing.test_ccc(online_testing.parse_args([str(a) for a in argv]))
    true = [float(row[LABEL_COLUMN[TEST_EMOTION]]) for row in label_rows(work["labels"], split)]
    assert len(pred) == len(true) == SPLIT_SIZES[split]
    assert reported["ccc"] == pytest.approx(hand_ccc(pred, true), rel=1e-9, abs=1e-12)


def test_online_testing_refuses_the_unlabelled_test3(work, trained, capsys):
    result = work["base"] / f"{UNLABELLED_SPLIT}.json"
    before = all_files(work["base"])
    code = cli(online_testing.main, [*MODEL_FLAGS, "-emo", TEST_EMOTION, "--split", UNLABELLED_SPLIT,
                                     *data_flags(work), "--result-json", result])
    message = capsys.readouterr().err
    assert code == 1
    assert f"'{UNLABELLED_SPLIT}'" in message
    assert re.search(r"\bno\b.*\blabels\b", message), message
    assert "prediction_process.py" in message
    assert all_files(work["base"]) == before     # no cache, no result file
    assert not result.exists()


def test_prediction_of_the_test3_audio(work, trained):
    names = sorted(row["FileName"] for row in label_rows(work["labels"], UNLABELLED_SPLIT))
    folder = work["base"] / "test3_audio"
    folder.mkdir()
    for name in names:
        shutil.copy(work["audio"] / name, folder / name)
    output = work["base"] / "test3_pred.csv"
    code, printed = cli_output(prediction_process.main, [
        "--input", folder, "--output", output, "-mt", "Temp-CNN", "-ep", "1", "-batch", "4",
        "-nc", "4", "--norm-dir", work["norm"], "--model-dir", work["models"]])
    assert code == 0, printed
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["File_Name"] for row in rows] == names
    for row in rows:
        assert all(np.isfinite(float(row[c])) for c in ("Aro-Score", "Dom-Score", "Val-Score"))
