"""reproduce.py checks the whole grid's data before its first run starts (sweep/preflight.py): a typo
in a split name, a missing feature or NormTerm file, too many clusters or unlabelled turns is
refused at once, with the message main.py or online_testing.py would have given after training,
and nothing is started or written."""
import csv
import os
import shutil
import subprocess
import sys

import pytest

import main as train_main
import online_testing
import reproduce
from support import ROOT
from utils import UserError


@pytest.fixture
def grid(tiny_corpus, tmp_path, monkeypatch):
    """reproduce.py's flags for a tiny grid; a sweep that gets as far as its runs fails the test."""
    def no_sweep(*args, **kwargs):
        raise AssertionError("the sweep was started")

    monkeypatch.setattr(reproduce, "sweep", no_sweep)
    c = tiny_corpus
    flags = {"-mt": "Temp-CNN", "-emo": "Act,Val", "-nc": "4", "-ep": "1", "-batch": "4", "--seeds": "31",
             "--features": c["features"], "--labels": c["labels"], "--norm-dir": c["norm"],
             "--cache-dir": str(tmp_path / "cache"), "--out": str(tmp_path / "out")}
    return {"flags": flags, "corpus": c, "tmp": tmp_path}


def refused(grid, changes):
    """The message reproduce.py refuses the grid with, its flags changed as given."""
    flags = dict(grid["flags"], **changes)
    with pytest.raises(UserError) as err:
        reproduce.main([word for pair in flags.items() for word in pair])
    assert not os.path.exists(grid["flags"]["--out"])
    return str(err.value)


def script_error(function, argv):
    """The UserError message of main.py's train or online_testing.py's test_ccc for argv."""
    with pytest.raises(UserError) as err:
        function(argv)
    return str(err.value)


def model_argv(grid, **extra):
    c = grid["corpus"]
    argv = ["-ep", "1", "-batch", "4", "-emo", "Act", "-nc", "4", "-mt", "Temp-CNN", "--features",
            c["features"], "--labels", c["labels"], "--norm-dir", c["norm"], "--cache-dir",
            str(grid["tmp"] / "cache"), "--model-dir", str(grid["tmp"] / "models")]
    for flag, value in extra.items():
        argv += [flag, value]
    return argv


def test_a_mistyped_test_split_is_refused_with_online_testings_message(grid):
    message = refused(grid, {"--split": "Tset1"})
    assert message == (f"labels file {grid['corpus']['labels']} has no rows in the split 'Tset1' "
                       "(its splits: Train, Validation, Test1)")
    assert message == script_error(lambda a: online_testing.test_ccc(online_testing.parse_args(a)),
                                   model_argv(grid, **{"--split": "Tset1"}))


def test_a_mistyped_validation_split_is_refused_with_mains_message(grid):
    message = refused(grid, {"--val-split": "Devel"})
    assert "has no rows in the split 'Devel'" in message
    assert message == script_error(lambda a: train_main.train(train_main.parse_args(a)),
                                   model_argv(grid, **{"--val-split": "Devel"}))


def test_too_many_clusters_for_the_train_split(grid):
    message = refused(grid, {"-nc": "4,200"})
    assert message == "the Train split has 16 turn(s), 176 chunks: too few for -nc 200 clusters"
    assert message == script_error(lambda a: train_main.train(train_main.parse_args(a)),
                                   model_argv(grid, **{"-nc": "200"}))


def test_missing_feature_and_normterm_files(grid):
    features = grid["tmp"] / "features"
    shutil.copytree(grid["corpus"]["features"], features)
    with open(grid["corpus"]["labels"], newline="") as f:
        test1 = [r["FileName"] for r in csv.DictReader(f) if r["Split_Set"] == "Test1"]
    gone = os.path.splitext(test1[-1])[0] + ".mat"
    os.remove(features / gone)
    assert refused(grid, {"--features": str(features)}) == (
        f"1 of 28 feature files missing in {features}, e.g. {gone}. Run feat_extract.py first (see README).")
    norm = grid["tmp"] / "NormTerm"
    shutil.copytree(grid["corpus"]["norm"], norm)
    os.remove(norm / "val_norm_stds.mat")
    assert refused(grid, {"--norm-dir": str(norm)}) == (
        f"normalisation file(s) missing: {norm / 'val_norm_stds.mat'}. Compute them with "
        f"`.venv/bin/python norm_para.py --labels {grid['corpus']['labels']} --features "
        f"{grid['corpus']['features']} --norm-dir {norm}` (from the corpus's Train split; see README).")


def test_labels_file_without_a_column_of_the_grid(grid):
    labels = grid["tmp"] / "labels.csv"
    with open(grid["corpus"]["labels"], newline="") as f:
        rows = list(csv.DictReader(f))
    with open(labels, "w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "EmoVal"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "EmoVal"} for r in rows)
    assert refused(grid, {"--labels": str(labels)}).startswith(f"labels file {labels} lacks the column(s) EmoVal")


def test_unlabelled_pool_too_small_or_too_few_chunks(grid):
    pool = grid["tmp"] / "pool"
    pool.mkdir()
    for name in sorted(os.listdir(grid["corpus"]["features"]))[:3]:
        shutil.copy(os.path.join(grid["corpus"]["features"], name), pool / name)
    assert refused(grid, {"-unlabel": "0,5", "--unlabeled-features": str(pool)}) == (
        f"-unlabel 5 is larger than the unlabelled pool (3 feature files in {pool})")
    assert refused(grid, {"-unlabel": "2", "--unlabeled-features": str(pool), "-nc": "4,30"}) == (
        "-unlabel 2 has 2 turn(s), 22 chunks: too few for -nc 30 clusters")


def test_the_issues_command_stops_in_seconds_with_one_line(tiny_corpus, tmp_path):
    """`reproduce.py -mt Temp-CNN -emo Act --seeds 31 -ep 1 --split Tset1` (issue 22): refused
    before any run, exit status 1, one line, no output folder."""
    out = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "reproduce.py", "-mt", "Temp-CNN", "-emo", "Act", "--seeds", "31",
                           "-ep", "1", "--split", "Tset1", "--features", tiny_corpus["features"], "--labels",
                           tiny_corpus["labels"], "--norm-dir", tiny_corpus["norm"], "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"error: labels file {tiny_corpus['labels']} has no rows in the split 'Tset1' "
                           "(its splits: Train, Validation, Test1)\n")
    assert not out.exists()
