"""Bad input, faults and untrusted files: a clear error, nothing lost.

One case per rule. Every bad input is made on the fly; each case checks the
exit status, the message, and that the good inputs beside the bad ones still
gave their output. Scripts run through their command lines (a subprocess in
the repository root, so a traceback would show) or through main(argv) wrapped
in run_cli, as their `__main__` does.
"""
import csv
import json
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import scipy.io
import torch

from support.audio import SR, tone, write_audio
from support.cli import cli, run_script
from support.corpus import write_labels
from support.files import leftovers, read_rows
from support.training import BATCH, K, assert_same_training, predict_argv, run_files, save_models, train_argv

import feat_extract  # noqa: E402
import main as train_script  # noqa: E402
import norm_para  # noqa: E402
import online_testing  # noqa: E402
import prediction_process  # noqa: E402
from dataloader import LabelledTurns  # noqa: E402
from deepemocluster.features import FeatureNorm, norm_files  # noqa: E402
from model import ARCH, checkpoint_name  # noqa: E402
from utils import (FEATURE_VAR, FRAMES_PER_CHUNK, NORM_VAR, load_mat, save_mat, save_torch,  # noqa: E402
                   sentence_uniform_sample, sentence_uniform_weights)


# --- helpers ---------------------------------------------------------------------------
def bad_audio_folder(root):
    """Good turns beside every kind of bad input; returns {kind: path}."""
    files = {
        "good": write_audio(os.path.join(root, "good.wav"), tone(3.0, 1)),
        "good_nested": write_audio(os.path.join(root, "spk1", "good_nested.wav"), tone(3.0, 2, 6.0)),
        "short": write_audio(os.path.join(root, "short.wav"), tone(0.5, 3)),
        "silent": write_audio(os.path.join(root, "silent.wav"), np.zeros(3 * SR, np.float32)),
    }
    t = np.arange(int(3.0 * 44100)) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)], axis=1)
    files["stereo"] = write_audio(os.path.join(root, "stereo_44k.wav"), 0.3 * stereo, 44100)
    files["text"] = os.path.join(root, "not_audio.wav")
    with open(files["text"], "w") as f:
        f.write("this is a text file with a .wav name\n")
    whole = open(files["good"], "rb").read()
    files["truncated"] = os.path.join(root, "truncated.wav")
    with open(files["truncated"], "wb") as f:
        f.write(whole[:30])  # cut inside the header
    for name in ("notes.txt", os.path.join("spk1", "README.md")):
        with open(os.path.join(root, name), "w") as f:
            f.write("not audio\n")
    return files


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def extraction(tmp_path_factory):
    """feat_extract.py once over a folder of good and bad inputs."""
    root = tmp_path_factory.mktemp("extract")
    files = bad_audio_folder(str(root / "in"))
    out = str(root / "out")
    rc, stdout, stderr = run_script("feat_extract.py", "--input", root / "in", "--output", out)
    return {"files": files, "out": out, "rc": rc, "stdout": stdout, "stderr": stderr}


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """An uninterrupted 3-epoch training run."""
    model_dir = str(tmp_path_factory.mktemp("trained"))
    train_script.main([str(a) for a in train_argv(corpus, model_dir)])
    return {"dir": model_dir, **run_files(model_dir)}


# --- feature extraction ---------------------------------------------------------------------------
def test_extract_skips_non_audio_files(extraction):
    assert "2 non-audio file(s) skipped" in extraction["stdout"]
    assert sorted(os.listdir(extraction["out"])) == sorted(
        ["good.mat", "good_nested.mat", "short.mat", "stereo_44k.mat", feat_extract.ERROR_RECORD])
    assert "Traceback" not in extraction["stderr"]


def test_extract_records_unreadable_corrupt_and_silent_wavs_and_goes_on(extraction):
    assert extraction["rc"] == 1
    assert "Traceback" not in extraction["stderr"]
    assert "3 failed" in extraction["stdout"]
    record = {stem(r["File"]): r["Reason"]
              for r in read_rows(os.path.join(extraction["out"], feat_extract.ERROR_RECORD))}
    assert set(record) == {"not_audio", "truncated", "silent"}
    assert record["not_audio"].startswith("unreadable audio")
    assert record["truncated"].startswith("unreadable audio")
    assert "silent" in record["silent"]
    for kind in ("good", "good_nested"):
        feat = load_mat(os.path.join(extraction["out"], stem(extraction["files"][kind]) + ".mat"),
                        FEATURE_VAR)
        assert feat.shape == (1 + 3 * SR // 256, 128)


def test_extract_accepts_stereo_at_any_sample_rate(extraction):
    feat = load_mat(os.path.join(extraction["out"], "stereo_44k.mat"), FEATURE_VAR)
    assert feat.shape == (1 + 3 * SR // 256, 128)  # mixed down and resampled to 16 kHz
    assert np.isfinite(feat).all() and feat.max() > 0


def test_extract_reports_a_turn_shorter_than_one_chunk(extraction):
    feat = load_mat(os.path.join(extraction["out"], "short.mat"), FEATURE_VAR)
    assert feat.shape == (1 + SR // 2 // 256, 128) and feat.shape[0] < FRAMES_PER_CHUNK
    assert f"1 turn(s) shorter than one chunk ({FRAMES_PER_CHUNK} frames): short.wav" in extraction["stdout"]


def test_extract_rerun_skips_complete_outputs_and_writes_atomically(tmp_path, monkeypatch, capsys):
    audio, out = str(tmp_path / "in"), str(tmp_path / "out")
    write_audio(os.path.join(audio, "a.wav"), tone(1.5, 1))
    write_audio(os.path.join(audio, "b.wav"), tone(1.5, 2))
    argv = ["--input", audio, "--output", out]
    assert cli(feat_extract.main, argv) == 0
    a_mat, b_mat = os.path.join(out, "a.mat"), os.path.join(out, "b.mat")
    a_bytes, a_feat = open(a_mat, "rb").read(), load_mat(a_mat, FEATURE_VAR)
    capsys.readouterr()
    # A truncated output (as a crash of another tool would leave) is redone, a complete one skipped.
    with open(b_mat, "r+b") as f:
        f.truncate(100)
    assert cli(feat_extract.main, argv) == 0
    assert "1 extracted, 1 already done" in capsys.readouterr().out
    assert load_mat(b_mat, FEATURE_VAR).shape[1] == 128
    # A run killed while writing (here: --overwrite) leaves the old output whole and no temporary.
    real_savemat = scipy.io.savemat

    def killed_mid_write(f, *args, **kwargs):
        f.write(b"MATLAB 5.0 MAT-file, half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(scipy.io, "savemat", killed_mid_write)
    assert cli(feat_extract.main, argv + ["--overwrite"]) == 130
    assert open(a_mat, "rb").read() == a_bytes
    assert leftovers(out) == []
    monkeypatch.setattr(scipy.io, "savemat", real_savemat)
    capsys.readouterr()
    assert cli(feat_extract.main, argv + ["--overwrite"]) == 0
    assert "2 extracted, 0 already done" in capsys.readouterr().out
    assert np.array_equal(load_mat(a_mat, FEATURE_VAR), a_feat)


# --- training and testing ------------------------------------------------------------------------
def test_bad_labels_and_missing_features_are_refused_with_a_message(corpus, tmp_path, capsys):
    rows = read_rows(corpus["labels"])
    columns = list(rows[0])
    # A labels file without EmoVal, through the command line.
    no_val = write_labels(str(tmp_path / "no_val.csv"), rows, [c for c in columns if c != "EmoVal"])
    rc, _, err = run_script("main.py", *train_argv(corpus, tmp_path / "m", labels=no_val))
    assert rc == 1 and "Traceback" not in err
    assert "lacks the column(s) EmoVal" in err
    # A split with no rows.
    no_validation = write_labels(str(tmp_path / "no_validation.csv"),
                                 [r for r in rows if r["Split_Set"] != "Validation"], columns)
    assert cli(train_script.main, train_argv(corpus, tmp_path / "m", labels=no_validation)) == 1
    assert ("has neither a Validation nor a Development split (its splits: Train, Test1)"
            in capsys.readouterr().err)
    assert cli(train_script.main, train_argv(corpus, tmp_path / "m", labels=no_validation)
               + ["--val-split", "Validation"]) == 1
    assert "no rows in the split 'Validation' (its splits: Train, Test1)" in capsys.readouterr().err
    save_models(tmp_path / "m", epochs=3)
    assert cli(online_testing.main, train_argv(corpus, tmp_path / "m") + ["--split", "Test2"]) == 1
    assert "no rows in the split 'Test2'" in capsys.readouterr().err
    # Feature files missing for listed turns: the count and the first names.
    train = [stem(r["FileName"]) for r in rows if r["Split_Set"] == "Train"]
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(os.path.join(corpus["features"], train[0] + ".mat"), partial)
    rc, _, err = run_script("norm_para.py", "--labels", corpus["labels"], "--features", partial,
                            "--norm-dir", tmp_path / "norm")
    assert rc == 1 and "Traceback" not in err
    assert f"{len(train) - 1} of {len(train)} feature files missing" in err
    assert all(s + ".mat" in err for s in train[1:])
    assert not os.path.exists(tmp_path / "norm")


@pytest.mark.parametrize("script, flag, value, allowed", [
    (train_script, "-mt", "Temp-LSTM", "Temp-GRU, Temp-CNN, Temp-Trans, Temp-Triplet"),
    (train_script, "-emo", "Aro", "Act, Dom, Val"),
    (train_script, "-nc", "1", "-nc must be at least 2"),
    (train_script, "-batch", "0", "-batch must be at least 1"),
    (train_script, "-ep", "0", "-ep must be at least 1"),
    (online_testing, "-nc", "1", "-nc must be at least 2"),
    (prediction_process, "-mt", "GRU", "Temp-GRU, Temp-CNN, Temp-Trans, Temp-Triplet"),
])
def test_invalid_flag_values_are_refused_with_the_allowed_values(script, flag, value, allowed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert allowed.replace(", ", "', '") in err or allowed in err
    assert value in err


def test_turns_shorter_than_one_chunk_are_padded_and_counted(corpus, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(corpus["features"], features)
    short = np.random.default_rng(0).uniform(0, 5, (40, 128)).astype(np.float32)
    save_mat(str(features / "short_turn.mat"), FEATURE_VAR, short)
    rows = read_rows(corpus["labels"])
    rows.append(dict(rows[0], FileName="short_turn.wav"))
    labels = write_labels(str(tmp_path / "labels.csv"), rows, list(rows[0]))
    norm = {"Val_mean": 4.0, "Val_std": 1.5, "features": FeatureNorm(np.full(128, 2.5), np.full(128, 1.5))}
    with pytest.warns(UserWarning, match=r"Train: 1 turn\(s\) shorter than 62 frames were padded with zeros"):
        data = LabelledTurns("Train", labels, str(features), norm, "Val", str(tmp_path / "cache"))
    assert len(data) == 5
    chunks = data.cache.read([4])[0]
    assert chunks.shape == (11, FRAMES_PER_CHUNK, 128)
    expected = norm["features"].apply(short)
    for chunk in chunks:  # every chunk is the whole turn, then zeros (the normalised mean)
        assert np.array_equal(chunk[:40], expected)
        assert not chunk[40:].any()


def test_an_empty_cluster_does_not_break_the_sampler(corpus, tmp_path, monkeypatch):
    assignment = np.array([0, 1, 3] * 11 * 4)[:44]  # cluster 2 of 4 is empty
    with np.errstate(all="raise"):
        weights = sentence_uniform_weights(assignment, K)
        drawn = sentence_uniform_sample(assignment, K, np.random.default_rng(0))
    assert np.isfinite(weights).all() and abs(weights.sum() - 1) < 1e-12
    assert len(drawn) == 4
    # A whole training epoch whose k-means leaves a cluster empty.
    monkeypatch.setattr(train_script, "run_kmeans",
                        lambda feats, k, seed, *gpu: (np.arange(len(feats)) % (k - 1), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        train_script.main([str(a) for a in train_argv(corpus, tmp_path, epochs=1)])
    with open(run_files(tmp_path, 1)["history"]) as f:
        assert np.isfinite(json.load(f)["train_loss"]).all()
    assert os.path.isfile(run_files(tmp_path, 1)["checkpoint"])


def test_a_non_finite_loss_stops_training_and_keeps_the_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    files = run_files(tmp_path)
    real_ccc_loss, saved = train_script.ccc_loss, {}

    def nan_from_epoch_2(pred, true):  # the checkpoint of epoch 1 exists from then on
        loss = real_ccc_loss(pred, true)
        if torch.is_grad_enabled() and os.path.exists(files["checkpoint"]):
            saved.setdefault("checkpoint", open(files["checkpoint"], "rb").read())
            return loss * float("nan")
        return loss

    monkeypatch.setattr(train_script, "ccc_loss", nan_from_epoch_2)
    assert cli(train_script.main, train_argv(corpus, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "the training loss became nan at epoch 2, batch 1" in err
    assert open(files["checkpoint"], "rb").read() == saved["checkpoint"]
    assert torch.load(files["resume"], weights_only=True)["epoch"] == 1
    assert leftovers(str(tmp_path)) == []


def test_checkpoint_and_normterm_writes_are_atomic(corpus, tmp_path, monkeypatch):
    # A checkpoint replaced while the process is killed: the old one stays whole.
    ckpt = str(tmp_path / "model.pth.tar")
    save_torch(ckpt, {"arch": ARCH, "state_dict": {"w": torch.ones(3)}})
    before = open(ckpt, "rb").read()

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_torch(ckpt, {"arch": ARCH, "state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert open(ckpt, "rb").read() == before
    assert torch.equal(torch.load(ckpt, weights_only=True)["state_dict"]["w"], torch.ones(3))
    # NormTerm files replaced while the process is killed: the old ones stay whole.
    norm = str(tmp_path / "NormTerm")
    for path in norm_files(norm).values():
        save_mat(path, NORM_VAR, np.zeros((1, 1)))
    old = {p: open(p, "rb").read() for p in norm_files(norm).values()}

    def killed_mid_savemat(f, *args, **kwargs):
        f.write(b"MATLAB 5.0 MAT-file, half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(scipy.io, "savemat", killed_mid_savemat)
    with pytest.raises(KeyboardInterrupt):
        norm_para.main(["--labels", corpus["labels"], "--features", corpus["features"],
                        "--norm-dir", norm])
    assert {p: open(p, "rb").read() for p in old} == old
    assert leftovers(str(tmp_path)) == []


def test_resume_after_a_kill_gives_the_same_training(corpus, trained, tmp_path, monkeypatch, capsys):
    files = run_files(tmp_path)
    argv = train_argv(corpus, tmp_path)
    real_save = train_script.save_epoch_state

    def killed_after_epoch_2(files, state):
        real_save(files, state)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_script, "save_epoch_state", killed_after_epoch_2)
    assert cli(train_script.main, argv) == 130
    monkeypatch.undo()
    with open(files["history"]) as f:
        assert len(json.load(f)["val_loss"]) == 2  # the kill lost nothing of the finished epochs
    capsys.readouterr()
    assert cli(train_script.main, argv + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "after epoch 2" in out and "epoch 3/3" in out and "epoch 2/3" not in out
    assert_same_training(files, trained, 3)


# --- prediction -----------------------------------------------------------------------------------
def test_predict_missing_checkpoint_or_normterm_says_where_and_how(corpus, models, tmp_path, capsys):
    audio = str(tmp_path / "in")
    write_audio(os.path.join(audio, "a.wav"), tone(2.0))
    output = str(tmp_path / "pred_result.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(prediction_process.main, predict_argv(corpus, str(empty), audio, output)) == 1
    expected = os.path.join(str(empty), checkpoint_name(1, BATCH, K, "Act", "Temp-Triplet"))
    err = capsys.readouterr().err
    assert f"checkpoint not found: {expected}" in err and "main.py" in err
    rc, _, err = run_script("prediction_process.py",
                            *predict_argv(corpus, models, audio, output, norm=str(empty)))
    assert rc == 1 and "Traceback" not in err
    assert os.path.join(str(empty), "feat_norm_means.mat") in err and "norm_para.py" in err
    assert not os.path.exists(output)


def test_predict_checkpoint_of_another_setup_is_explained(corpus, tmp_path, capsys):
    audio = str(tmp_path / "in")
    write_audio(os.path.join(audio, "a.wav"), tone(2.0))
    output = str(tmp_path / "pred_result.csv")
    other_k, other_mt = str(tmp_path / "k"), str(tmp_path / "mt")
    save_models(other_k, n_clusters=K, as_clusters=K + 1)
    save_models(other_mt, temporal_type="Temp-GRU")
    assert cli(prediction_process.main, predict_argv(corpus, other_k, audio, output, n_clusters=K + 1)) == 1
    err = capsys.readouterr().err
    assert f"was trained with {K} clusters, but -nc {K + 1} was given" in err
    assert "state_dict" not in err and "size mismatch" not in err
    assert cli(prediction_process.main, predict_argv(corpus, other_mt, audio, output)) == 1
    assert "holds a Temp-GRU model, but -mt Temp-Triplet was given" in capsys.readouterr().err
    assert not os.path.exists(output)


def test_predict_empty_input_folder(corpus, models, tmp_path):
    empty = tmp_path / "in"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no audio here\n")
    rc, _, err = run_script("prediction_process.py",
                            *predict_argv(corpus, models, empty, tmp_path / "pred_result.csv"))
    assert rc == 1 and "Traceback" not in err
    assert f"no .wav files found under {empty}" in err


def test_predict_accounts_for_every_wav_and_writes_the_csv_atomically(corpus, models, tmp_path, monkeypatch):
    audio = str(tmp_path / "in")
    files = bad_audio_folder(audio)
    output = str(tmp_path / "out" / "pred_result.csv")
    rc, out, err = run_script("prediction_process.py", *predict_argv(corpus, models, audio, output))
    assert rc == 1 and "Traceback" not in err
    assert "3 file(s) could not be read" in out
    assert "1 file(s) shorter than 62 frames were padded" in err
    predicted = read_rows(output)
    errors = {r["File_Name"]: r["Reason"] for r in read_rows(output[:-4] + "_errors.csv")}
    good = ["good.wav", "good_nested.wav", "short.wav", "stereo_44k.wav"]
    assert sorted(r["File_Name"] for r in predicted) == sorted(good)
    assert sorted(errors) == ["not_audio.wav", "silent.wav", "truncated.wav"]
    assert all(reason for reason in errors.values())
    assert sorted([*errors, *good]) == sorted(os.path.basename(p) for p in files.values())
    for row in predicted:
        assert all(np.isfinite(float(row[c])) for c in ("Aro-Score", "Dom-Score", "Val-Score"))
    # A run killed while writing the CSV leaves the previous CSV whole.
    before = open(output, "rb").read()

    class KilledWriter:
        def __init__(self, f, *args, **kwargs):
            self.f = f

        def writerow(self, row):
            self.f.write(",".join(map(str, row)) + "\n")

        def writerows(self, rows):
            self.f.write("half,a,row")
            raise KeyboardInterrupt

    monkeypatch.setattr(csv, "writer", KilledWriter)
    with pytest.raises(KeyboardInterrupt):
        prediction_process.main([str(a) for a in predict_argv(
            corpus, models, os.path.dirname(files["good_nested"]), output)])
    assert open(output, "rb").read() == before
    assert leftovers(str(tmp_path / "out")) == []


# --- untrusted files -----------------------------------------------------------------------------
class WritesAFile:
    """Unpickling this runs code: it would create the file named in `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from a checkpoint ran')",)


def test_a_checkpoint_that_would_run_code_is_refused(corpus, models, tmp_path, capsys):
    marker = str(tmp_path / "pwned")
    # A torch checkpoint whose state dict holds the object, at the Act model's path.
    evil_models = str(tmp_path / "models")
    shutil.copytree(models, evil_models)
    act = os.path.join(evil_models, checkpoint_name(1, BATCH, K, "Act", "Temp-Triplet"))
    torch.save({"arch": ARCH, "state_dict": {"cnn_out.module.0.bias": WritesAFile(marker)}}, act)
    audio = str(tmp_path / "in")
    write_audio(os.path.join(audio, "a.wav"), tone(2.0))
    rc, _, err = run_script("prediction_process.py",
                            *predict_argv(corpus, evil_models, audio, tmp_path / "pred_result.csv"))
    assert rc == 1 and "Traceback" not in err
    assert f"refusing to load {act}" in err
    assert not os.path.exists(marker)
    # A plain pickle as the resume file of an interrupted training.
    resume = run_files(tmp_path / "train")["resume"]
    os.makedirs(os.path.dirname(resume))
    with open(resume, "wb") as f:
        pickle.dump({"epoch": 1, "state_dict": WritesAFile(marker)}, f, protocol=2)
    assert cli(train_script.main, train_argv(corpus, tmp_path / "train") + ["--resume"]) == 1
    assert f"refusing to load {resume}" in capsys.readouterr().err
    assert not os.path.exists(marker)


def test_cluster_logs_and_history_are_json_and_numpy_not_pickles(trained):
    with open(trained["history"]) as f:
        history = json.load(f)
    assert len(history["train_loss"]) == len(history["nmi"]) == 3
    log = np.load(trained["clusters"], allow_pickle=False)
    assert log.shape == (3, 4 * 11) and log.dtype == np.int32
    for key in ("checkpoint", "resume"):
        torch.load(trained[key], map_location="cpu", weights_only=True)
    for name in os.listdir(trained["dir"]):
        with open(os.path.join(trained["dir"], name), "rb") as f:
            assert f.read(1) != b"\x80", f"{name} is a raw pickle"
    assert leftovers(trained["dir"]) == []
