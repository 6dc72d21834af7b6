"""Tests for make_demo_corpus.py on a tiny corpus (a few seconds in all)."""

import collections
import csv
import json
import os
import wave

import pytest

import make_demo_corpus as mdc
from support.files import file_contents

TINY = ["--train", "6", "--validation", "3", "--test", "3", "--predict", "2", "--unlabeled", "2"]
COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
# The current MSP-Podcast layout (method §2): its header line, splits and labels file.
V112_TINY = ["--release", "v1.12", "--train", "6", "--validation", "3", "--test", "3",
             "--test2", "4", "--test3", "2", "--predict", "2", "--unlabeled", "2"]
V112_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
V112_COUNTS = {"Train": 6, "Development": 3, "Test1": 3, "Test2": 4, "Test3": 2}
V112_LABELS = os.path.join("Labels", "labels_consensus.csv")
V18_LABELS = os.path.join("Labels", "labels_concensus.csv")
LABEL_CELLS = ("EmoClass", "EmoAct", "EmoVal", "EmoDom")


def make(out_dir, seed=0, extra=()):
    assert mdc.main(["--out", str(out_dir), "--seed", str(seed), *TINY, *extra]) == 0
    return out_dir


def read_rows(root, labels=V18_LABELS):
    with open(os.path.join(root, labels), newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def make_v112(out_dir, seed=0):
    assert mdc.main(["--out", str(out_dir), "--seed", str(seed), *V112_TINY]) == 0
    return out_dir


def file_speaker(file_name):
    """The speaker number in MSP-PODCAST_{speaker}_{turn}.wav."""
    return int(file_name.split("_")[1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make(tmp_path_factory.mktemp("corpus") / "demo")


def test_same_seed_gives_identical_files(corpus, tmp_path):
    again = make(tmp_path / "again")
    first, second = file_contents(corpus), file_contents(again)
    assert sorted(first) == sorted(second)
    assert first == second


def test_rerun_in_place_is_identical_and_overwrites(tmp_path):
    out = make(tmp_path / "demo")
    before = file_contents(out)
    wav = os.path.join(out, "Audios", sorted(os.listdir(os.path.join(out, "Audios")))[0])
    with open(wav, "wb") as handle:
        handle.write(b"garbage")
    make(out)
    assert file_contents(out) == before
    assert not [name for name in os.listdir(os.path.join(out, "Audios")) if name.endswith(".tmp")]


def test_different_seed_differs(corpus, tmp_path):
    other = make(tmp_path / "other", seed=1)
    first, second = file_contents(corpus), file_contents(other)
    assert first["Labels/labels_concensus.csv"] != second["Labels/labels_concensus.csv"]
    shared_wavs = [p for p in first if p.endswith(".wav") and p in second]
    assert shared_wavs
    assert all(first[p] != second[p] for p in shared_wavs)


def test_csv_columns_and_values(corpus):
    fields, rows = read_rows(corpus)
    assert fields == COLUMNS
    assert len(rows) == 12
    assert [r["Split_Set"] for r in rows].count("Train") == 6
    assert [r["Split_Set"] for r in rows].count("Validation") == 3
    assert [r["Split_Set"] for r in rows].count("Test1") == 3
    for row in rows:
        assert row["FileName"].endswith(".wav")
        for column in ("EmoAct", "EmoVal", "EmoDom"):
            assert 1.0 <= float(row[column]) <= 7.0
        assert row["Split_Set"] in {"Train", "Validation", "Test1"}
        assert row["Gender"] in {"Male", "Female"}
        assert row["EmoClass"] in set("NHSACUDF")
        int(row["SpkrID"])
    assert len({r["FileName"] for r in rows}) == len(rows)


def test_splits_are_speaker_disjoint(corpus):
    _, rows = read_rows(corpus)
    speakers = {split: {r["SpkrID"] for r in rows if r["Split_Set"] == split}
                for split in ("Train", "Validation", "Test1")}
    assert all(speakers.values())
    assert not speakers["Train"] & speakers["Validation"]
    assert not speakers["Train"] & speakers["Test1"]
    assert not speakers["Validation"] & speakers["Test1"]


def check_wav(path):
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 16000
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getcomptype() == "NONE"
        assert wav.getnframes() / 16000 >= 2.75


def test_listed_wavs_exist_and_have_the_format(corpus):
    _, rows = read_rows(corpus)
    for row in rows:
        check_wav(os.path.join(corpus, "Audios", row["FileName"]))
    assert sorted(os.listdir(os.path.join(corpus, "Audios"))) == sorted(r["FileName"] for r in rows)


def test_predict_and_unlabeled_files(corpus):
    _, rows = read_rows(corpus)
    listed = {r["FileName"] for r in rows}
    predict = sorted(os.listdir(os.path.join(corpus, "Predict")))
    unlabeled = sorted(os.listdir(os.path.join(corpus, "Unlabeled")))
    assert len(predict) == 2 and len(unlabeled) == 2
    for folder, names in (("Predict", predict), ("Unlabeled", unlabeled)):
        for name in names:
            check_wav(os.path.join(corpus, folder, name))
    names = listed | set(predict) | set(unlabeled)
    assert len(names) == len(listed) + len(predict) + len(unlabeled)


def test_predict_speakers_are_test_speakers_and_unlabeled_speakers_are_new(corpus):
    _, rows = read_rows(corpus)
    test_speakers = {int(r["SpkrID"]) for r in rows if r["Split_Set"] == "Test1"}
    labelled_speakers = {int(r["SpkrID"]) for r in rows}
    predict = os.listdir(os.path.join(corpus, "Predict"))
    unlabeled = os.listdir(os.path.join(corpus, "Unlabeled"))
    assert {int(name.split("_")[1]) for name in predict} <= test_speakers
    assert not {int(name.split("_")[1]) for name in unlabeled} & labelled_speakers


def test_smaller_rerun_removes_stale_generated_files(tmp_path):
    out = make(tmp_path / "demo")
    assert mdc.main(["--out", str(out), "--train", "2", "--validation", "1", "--test", "1",
                     "--predict", "1", "--unlabeled", "0"]) == 0
    _, rows = read_rows(out)
    assert sorted(os.listdir(os.path.join(out, "Audios"))) == sorted(r["FileName"] for r in rows)
    assert len(os.listdir(os.path.join(out, "Predict"))) == 1
    assert os.listdir(os.path.join(out, "Unlabeled")) == []


def test_refuses_a_folder_with_foreign_labels(tmp_path):
    out = tmp_path / "real"
    (out / "Labels").mkdir(parents=True)
    (out / "Labels" / "labels_concensus.csv").write_text("FileName\n")
    with pytest.raises(SystemExit) as exit_info:
        mdc.main(["--out", str(out), *TINY])
    assert exit_info.value.code == 2
    assert (out / "Labels" / "labels_concensus.csv").read_text() == "FileName\n"


@pytest.mark.parametrize("bad", [
    ["--train", "-1"],
    ["--validation", "-3"],
    ["--test", "-1"],
    ["--predict", "-1"],
    ["--unlabeled", "-2"],
    ["--train", "1.5"],
    ["--size", "0"],
    ["--size", "-0.5"],
    ["--size", "nan"],
    ["--size", "inf"],
    ["--seed", "-1"],
    ["--test", "0", "--predict", "1"],
    ["--test2", "3"],
    ["--test3", "1"],
    ["--release", "v1.12", "--test3", "-1"],
    ["--release", "v2"],
])
def test_bad_flag_values_exit_with_code_2(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mdc.main(["--out", str(tmp_path / "x"), *bad])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_size_scales_default_counts():
    args = mdc.build_parser().parse_args(["--size", "0.5"])
    assert mdc.split_counts(args) == {"Train": 240, "Validation": 60, "Test1": 60}
    args = mdc.build_parser().parse_args(["--size", "0.001"])
    assert mdc.split_counts(args) == {"Train": 1, "Validation": 1, "Test1": 1}
    args = mdc.build_parser().parse_args(["--size", "0.5", "--test", "7"])
    assert mdc.split_counts(args)["Test1"] == 7


def test_default_speaker_counts():
    plan = mdc.plan_corpus({"Train": 480, "Validation": 120, "Test1": 120}, 20, 0)
    speakers = {split: {spk for _, spk, _, kind, s in plan if s == split}
                for split in ("Train", "Validation", "Test1")}
    assert [len(speakers[s]) for s in ("Train", "Validation", "Test1")] == [24, 6, 6]


def test_turns_do_not_depend_on_corpus_size(corpus, tmp_path):
    """Each turn comes from its own (seed, speaker, turn) generator, not from the order of work."""
    small = tmp_path / "small"
    assert mdc.main(["--out", str(small), "--train", "3", "--validation", "3", "--test", "3",
                     "--predict", "0"]) == 0
    big, little = file_contents(corpus), file_contents(small)
    wavs = [p for p in little if p.endswith(".wav")]
    assert len(wavs) == 9
    assert all(little[p] == big[p] for p in wavs)


# --- --release v1.12: the layout of the releases distributed today ---------------------

@pytest.fixture(scope="module")
def v112(tmp_path_factory):
    return make_v112(tmp_path_factory.mktemp("v112") / "demo")


def test_v112_header_is_the_release_column_order(v112):
    with open(os.path.join(v112, V112_LABELS), newline="") as handle:
        assert handle.readline().rstrip("\n") == V112_HEADER
    assert not os.path.exists(os.path.join(v112, V18_LABELS))


def test_v112_split_names_and_counts(v112):
    _, rows = read_rows(v112, V112_LABELS)
    splits = [r["Split_Set"] for r in rows]
    assert list(dict.fromkeys(splits)) == list(V112_COUNTS)
    assert collections.Counter(splits) == V112_COUNTS
    assert len({r["FileName"] for r in rows}) == len(rows)


def test_v112_labelled_rows_have_labels_and_speakers(v112):
    _, rows = read_rows(v112, V112_LABELS)
    for row in (r for r in rows if r["Split_Set"] != "Test3"):
        for column in ("EmoAct", "EmoVal", "EmoDom"):
            assert 1.0 <= float(row[column]) <= 7.0
        assert row["EmoClass"] in set("NHSACUDF")
        assert int(row["SpkrID"]) == file_speaker(row["FileName"])
        assert row["Gender"] in {"Male", "Female"}


def test_v112_test3_rows_have_no_labels_and_their_wavs_exist(v112):
    _, rows = read_rows(v112, V112_LABELS)
    test3 = [r for r in rows if r["Split_Set"] == "Test3"]
    assert len(test3) == V112_COUNTS["Test3"]
    for row in test3:
        assert all(row[column] == "" for column in LABEL_CELLS)
        assert row["SpkrID"] == "Unknown"
        assert row["Gender"] in {"Male", "Female"}
        check_wav(os.path.join(v112, "Audios", row["FileName"]))
    assert sorted(os.listdir(os.path.join(v112, "Audios"))) == sorted(r["FileName"] for r in rows)


def test_v112_splits_are_speaker_disjoint(v112):
    _, rows = read_rows(v112, V112_LABELS)
    speakers = {split: {file_speaker(r["FileName"]) for r in rows if r["Split_Set"] == split}
                for split in V112_COUNTS}
    assert all(speakers.values())
    for i, first in enumerate(V112_COUNTS):
        for second in list(V112_COUNTS)[i + 1:]:
            assert not speakers[first] & speakers[second], (first, second)
    unlabeled = {file_speaker(name) for name in os.listdir(os.path.join(v112, "Unlabeled"))}
    predict = {file_speaker(name) for name in os.listdir(os.path.join(v112, "Predict"))}
    assert not unlabeled & set().union(*speakers.values())
    assert predict <= speakers["Test1"]


def test_v112_same_seed_gives_identical_files(v112, tmp_path):
    first, second = file_contents(v112), file_contents(make_v112(tmp_path / "again"))
    assert sorted(first) == sorted(second)
    assert first == second


def test_v112_rerun_in_place_is_identical(tmp_path):
    out = make_v112(tmp_path / "demo")
    before = file_contents(out)
    make_v112(out)
    assert file_contents(out) == before


def test_v112_marker_names_the_release_and_the_default_marker_does_not(v112, corpus):
    with open(os.path.join(v112, "demo_corpus.json")) as handle:
        marker = json.load(handle)
    assert marker["release"] == "v1.12"
    assert marker["counts"] == V112_COUNTS
    with open(os.path.join(corpus, "demo_corpus.json")) as handle:
        assert sorted(json.load(handle)) == ["counts", "generator", "predict", "sample_rate",
                                             "seed", "unlabeled"]


def test_v112_first_three_splits_are_the_default_corpus_renamed(v112, corpus):
    """Train, Development and Test1 of v1.12 are the default's Train, Validation and Test1."""
    _, old = read_rows(corpus)
    _, new = read_rows(v112, V112_LABELS)
    renamed = [{**r, "Split_Set": "Development" if r["Split_Set"] == "Validation" else r["Split_Set"]}
               for r in old]
    assert new[:len(old)] == renamed
    old_files, new_files = file_contents(corpus), file_contents(v112)
    for row in old:
        path = os.path.join("Audios", row["FileName"])
        assert new_files[path] == old_files[path]


def test_switching_release_in_place_leaves_only_the_new_layout(tmp_path):
    out = make_v112(tmp_path / "demo")
    make(out)
    assert file_contents(out) == file_contents(make(tmp_path / "fresh_default"))
    make_v112(out)
    assert file_contents(out) == file_contents(make_v112(tmp_path / "fresh_v112"))


def test_refuses_a_folder_with_foreign_v112_labels(tmp_path):
    out = tmp_path / "real"
    (out / "Labels").mkdir(parents=True)
    (out / "Labels" / "labels_consensus.csv").write_text("FileName\n")
    with pytest.raises(SystemExit) as exit_info:
        mdc.main(["--out", str(out), *TINY])
    assert exit_info.value.code == 2
    assert (out / "Labels" / "labels_consensus.csv").read_text() == "FileName\n"
    assert not (out / "Audios").exists()


def test_v112_default_and_scaled_counts():
    args = mdc.build_parser().parse_args(["--release", "v1.12"])
    assert mdc.split_counts(args) == {"Train": 480, "Development": 120, "Test1": 120,
                                      "Test2": 60, "Test3": 20}
    args = mdc.build_parser().parse_args(["--release", "v1.12", "--size", "0.5", "--test3", "3"])
    assert mdc.split_counts(args) == {"Train": 240, "Development": 60, "Test1": 60,
                                      "Test2": 30, "Test3": 3}
    assert list(mdc.split_counts(args)) == ["Train", "Development", "Test1", "Test2", "Test3"]
