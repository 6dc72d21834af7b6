"""A full disk and a labels file that cannot be right (issue 23): said in one line, exit 1,
nothing half-written left, the previous files byte-identical, and the work continues after.

A full disk is simulated by tests/support/full_disk.py (the OS's ENOSPC from Python's file write,
so torch.save meets it as it would, and reports it as a RuntimeError), at every kind of file
the project writes; once on a real tmpfs where the tests run as root. Scripts run as their
`__main__` does: main(argv) under run_cli with the script's own advice; the sweep's scripts
are real child processes, given the full disk through their environment.
"""
import dataclasses
import errno
import json
import os
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch

from support.full_disk import FullDisk, room_again
from support.audio import tone, write_audio
from support.corpus import write_labels
from support.files import file_contents, leftovers, read_rows
from support.release_server import url_path
from support.training import BATCH, K, assert_same_training, predict_argv, run_files, save_models, train_argv

from deepemocluster import disk_space  # noqa: E402
import feat_extract  # noqa: E402
import fetch_models  # noqa: E402
import make_demo_corpus  # noqa: E402
import main as train_script  # noqa: E402
import norm_para  # noqa: E402
import online_testing  # noqa: E402
import prediction_process  # noqa: E402
import reproduce  # noqa: E402
import utils  # noqa: E402
from dataloader import cache_bytes  # noqa: E402
from deepemocluster.features import norm_files  # noqa: E402
from deepemocluster.labels import read_labels  # noqa: E402
from model import build_model  # noqa: E402
from utils import DiskFullError, FREE_SPACE_AND_RERUN, UserError, human_size, run_cli  # noqa: E402

FREE = 12_345                      # what the tests' disks have left, as the message says it
FREE_TEXT = "12.3 kB"
ADVICE = {train_script: train_script.after_full_disk, feat_extract: feat_extract.AFTER_FULL_DISK,
          fetch_models: fetch_models.AFTER_FULL_DISK, reproduce: reproduce.AFTER_FULL_DISK}
REAL_VALIDATE = train_script.validate
RESUME_ADVICE = ("Free space, then run the same command again with --resume: the checkpoint and "
                 "resume state of the completed epochs are intact, and it continues after them.")


# --- helpers --------------------------------------------------------------------------------------
def cli(script, argv):
    """script.main(argv) as its `__main__` runs it: run_cli with the script's advice."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: script.main([str(a) for a in argv]),
                disk_full=ADVICE.get(script, FREE_SPACE_AND_RERUN))
    return exit_info.value.code


def full_disk_message(path, advice, free=FREE_TEXT):
    return (f"error: out of disk space (No space left on device) writing {path}: {free} free in "
            f"{os.path.dirname(path)}; nothing half-written was kept. {advice}\n")


def snapshot(folder, temporary=True):
    """{relative path: bytes} of every file under `folder` (but temporary files, if not
    `temporary`: the one a write has just created when the full disk meets it)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if not temporary and name.endswith(".tmp"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def disk(monkeypatch):
    """full(name, room, skip): the disk is full for that file from now on (12.3 kB free)."""
    monkeypatch.setattr(utils, "free_bytes", lambda folder: FREE)

    def full(name, room=0, skip=0, on_hit=None):
        return FullDisk(name, room, skip, on_hit).install(monkeypatch)
    return full


def improving_validation(monkeypatch, model_dir):
    """Validation loss 0.01 lower each epoch (after the real validation, which draws from the
    run's generator as always), so that every epoch rewrites the checkpoint. Keyed on the epoch
    in the resume state, so an interrupted and resumed run sees the same losses."""
    resume = run_files(model_dir, 2)["resume"]

    def validate(*args):
        done = torch.load(resume, weights_only=True)["epoch"] if os.path.isfile(resume) else 0
        return REAL_VALIDATE(*args) - 0.01 * done
    monkeypatch.setattr(train_script, "validate", validate)


# --- training ---------------------------------------------------------------------------------------
def test_training_stopped_by_a_full_disk_resumes_to_the_uninterrupted_result(
        corpus, disk, tmp_path, monkeypatch, capsys):
    reference, model_dir = str(tmp_path / "whole"), str(tmp_path / "interrupted")
    improving_validation(monkeypatch, reference)
    assert cli(train_script, train_argv(corpus, reference, epochs=2)) == 0
    improving_validation(monkeypatch, model_dir)
    files = run_files(model_dir, 2)
    argv = train_argv(corpus, model_dir, epochs=2)
    # Epoch 2's checkpoint meets the full disk (epoch 1's was written); the other files of the
    # epoch meet it in test_each_file_of_an_epoch_meets_a_full_disk.
    before = {}
    full = disk(os.path.basename(files["checkpoint"]), room=100, skip=1,
                on_hit=lambda: before.update(snapshot(model_dir, temporary=False)))
    capsys.readouterr()
    assert cli(train_script, argv) == 1
    assert full.hits
    assert capsys.readouterr().err == full_disk_message(files["checkpoint"], RESUME_ADVICE)
    assert snapshot(model_dir) == before          # no temporary file, nothing changed
    assert torch.load(files["resume"], weights_only=True)["epoch"] == 1
    room_again(monkeypatch)
    assert cli(train_script, argv + ["--resume"]) == 0
    assert "after epoch 1" in capsys.readouterr().out
    history = assert_same_training(files, run_files(reference, 2), 2)
    assert history["val_loss"][1] < history["val_loss"][0]   # epoch 2's checkpoint was written
    assert leftovers(model_dir) == []


@pytest.fixture
def epoch_1_saved(corpus, tmp_path):
    """A run's files after epoch 1 (model, optimisers, generators as main.py saves them)."""
    args = train_script.parse_args([str(a) for a in train_argv(corpus, tmp_path / "m", epochs=2)])
    run = train_script.TrainingFiles.from_args(args)
    model = build_model("Temp-Triplet", K)
    model.remove_cluster_head()
    optimizers = train_script.make_optimizers(model)
    model.restore_cluster_head()
    rng, triplet_gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    history = {"train_loss": [3.0], "unsup_loss": [None], "val_loss": [1.0], "nmi": [None], "seconds": [1.0]}
    state = train_script.TrainingState(model, optimizers, rng, triplet_gen, history,
                                       [np.zeros(4 * 11, np.int32)], epoch=1, best=1.0)
    train_script.save_torch(run.checkpoint, {"arch": "x", "state_dict": {"w": torch.ones(2)}})
    train_script.save_epoch_state(run, state)
    train_script.plot_trends(history, run, "a run")
    return run, state


@pytest.mark.parametrize("suffix", ["_clusters.npy", "_history.json", "_resume.pth.tar",
                                    "_NMI_ValLoss.png", "_TrainLoss.png"])
def test_each_file_of_an_epoch_meets_a_full_disk(epoch_1_saved, disk, suffix, capsys):
    """Epoch 2's cluster log, history, resume state and plots: the message, and epoch 1's files."""
    run, state = epoch_1_saved
    history = {k: v * 2 for k, v in state.history.items()}
    folder = os.path.dirname(run.checkpoint)
    before = snapshot(folder)
    full = disk(os.path.basename(run.stem + suffix), room=100)

    def epoch_2():
        train_script.save_epoch_state(run, dataclasses.replace(state, history=history,
                                                               cluster_log=state.cluster_log * 2, epoch=2))
        train_script.plot_trends(history, run, "a run")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(epoch_2, disk_full=train_script.after_full_disk)
    assert exit_info.value.code == 1 and full.hits
    assert capsys.readouterr().err == full_disk_message(run.stem + suffix, RESUME_ADVICE)
    after = snapshot(folder)
    assert after[os.path.basename(run.stem + suffix)] == before[os.path.basename(run.stem + suffix)]
    assert set(after) == set(before)


def test_the_advice_after_a_full_disk_follows_what_training_saved(tmp_path):
    stem = str(tmp_path / "TempDeepEmoCluster_epoch2_batch4_4clusters_Val_Temp-Triplet")

    def advice(path):
        return train_script.after_full_disk(DiskFullError(path, "No space left on device", FREE))
    for path in (stem + ".pth.tar", stem + "_resume.pth.tar", str(tmp_path / "cache" / "Train_0123456789abcdef.npy")):
        assert advice(path) == FREE_SPACE_AND_RERUN   # no epoch saved, or not a file of the run
    open(stem + ".pth.tar", "wb").close()
    assert advice(stem + "_history.json") == (
        "Free space, then run the same command again with --overwrite: the first epoch's checkpoint "
        "was saved, but not its resume state.")
    open(stem + "_resume.pth.tar", "wb").close()
    for suffix in train_script.RUN_FILES.values():
        assert advice(stem + suffix) == RESUME_ADVICE


def test_a_full_disk_while_the_chunk_cache_is_built(corpus, disk, tmp_path, capsys):
    cache = tmp_path / "cache"
    full = disk("Train_*.npy", room=200_000)   # the header and a turn, then the disk is full
    argv = train_argv(corpus, tmp_path / "m", epochs=1)
    argv[argv.index("--cache-dir") + 1] = cache
    assert cli(train_script, argv) == 1
    assert full.hits
    err = capsys.readouterr().err
    path = re.search(r"writing (\S+): ", err).group(1)
    assert re.fullmatch(re.escape(str(cache)) + r"/Train_[0-9a-f]{16}\.npy", path)
    assert err == full_disk_message(path, FREE_SPACE_AND_RERUN)
    assert os.listdir(cache) == [] and not os.path.exists(tmp_path / "m")


# --- room checked before the long work ------------------------------------------------------------
def test_a_chunk_cache_that_cannot_fit_is_refused_before_it_is_built(corpus, tmp_path, monkeypatch,
                                                                     capsys):
    cache, model_dir = tmp_path / "cache", tmp_path / "m"
    cache.mkdir()
    for name, size, age in (("Validation_0123456789abcdef", 200_000, 100), ("Train_fedcba9876543210", 50_000, 200)):
        for ext, n in ((".npy", size), (".json", 100)):
            (cache / (name + ext)).write_bytes(b"\0" * n)
            os.utime(cache / (name + ext), (1e9 - age, 1e9 - age))
    (cache / "notes.npy").write_bytes(b"not a cache")
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 1_000_000)
    argv = train_argv(corpus, model_dir, epochs=1)
    argv[argv.index("--cache-dir") + 1] = cache
    older = (f"Chunk caches of other inputs or NormTerm in {cache}, which this run does not use "
             "(delete each with its .json to make room), oldest first: "
             "Train_fedcba9876543210.npy (50.1 kB), Validation_0123456789abcdef.npy (200.1 kB)\n")
    assert cli(train_script, argv) == 1
    needed = cache_bytes(4, "float32")
    assert needed == 128 + 4 * (11 * 62 * 128 * 4 + 64)
    assert capsys.readouterr().err == (
        f"error: the Train chunk cache needs {human_size(needed)} in {cache}, but 1.0 MB is free "
        f"there. Free space, give --cache-dtype float16 (it needs {human_size(cache_bytes(4, 'float16'))}) "
        f"or give another --cache-dir. {older}")
    assert len(os.listdir(cache)) == 5 and not model_dir.exists()
    # online_testing.py builds its cache in the same place: the same check.
    save_models(model_dir, epochs=1)
    test_argv = argv + ["--cache-dtype", "float16"]
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 300_000)
    assert cli(online_testing, test_argv) == 1
    assert capsys.readouterr().err == (
        f"error: the Test1 chunk cache needs {human_size(cache_bytes(2, 'float16'))} in {cache}, but "
        f"300.0 kB is free there. Free space or give another --cache-dir. {older}")


def test_training_that_cannot_fit_stops_before_the_first_epoch(corpus, tmp_path, monkeypatch, capsys):
    model_dir = str(tmp_path / "m")
    monkeypatch.setattr(disk_space, "free_bytes",
                        lambda folder: 5_000_000 if folder == model_dir else 10 ** 12)
    assert cli(train_script, train_argv(corpus, model_dir, epochs=2)) == 1
    model = build_model("Temp-Triplet", K)
    model.remove_cluster_head()
    ckpt, resume, clusters = disk_space.training_bytes(model, 4, 2)
    assert clusters == 128 + 2 * 4 * 11 * 4
    needed = ckpt + 2 * resume + clusters + disk_space.SMALL_FILES_BYTES
    out, err = capsys.readouterr()
    assert err == (f"error: training needs {human_size(needed)} in {model_dir}, but 5.0 MB is free "
                   f"there. It keeps a checkpoint ({human_size(ckpt)}), a resume state "
                   f"({human_size(resume)}) and a cluster log ({human_size(clusters)} after 2 epochs), "
                   "and writes each through a temporary copy: free space, or give another --model-dir\n")
    assert "epoch 1/" not in out and not os.path.exists(model_dir)


def test_the_training_room_is_what_the_files_take(tmp_path, monkeypatch):
    """The estimate against the files of a real run (2 epochs of the tiny corpus): at least
    their size, at most 5 % more; a resumed run counts its own files as room."""
    model = build_model("Temp-Triplet", K)
    model.remove_cluster_head()
    ckpt, resume, clusters = disk_space.training_bytes(model, 4, 2)
    # The files a 2-epoch run of this model writes (the Adam state of a trained model).
    real = build_model("Temp-Triplet", K)
    real.remove_cluster_head()
    sgd, adam = train_script.make_optimizers(real)
    real.restore_cluster_head()
    for p in real.parameters():
        p.grad = torch.ones_like(p)
    adam.step()
    run = {"checkpoint": str(tmp_path / "c.pth.tar"), "resume": str(tmp_path / "r.pth.tar"),
           "clusters": str(tmp_path / "k.npy")}
    utils.save_torch(run["checkpoint"], {"arch": "x", "state_dict": train_script.released_state_dict(real)})
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    utils.save_torch(run["resume"], {
        "epoch": 2, "best_val_loss": 1.0, "state_dict": train_script.released_state_dict(real),
        "sgd": sgd.state_dict(), "adam": adam.state_dict(), "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(), "cuda_rng": [], "triplet_rng": gen.get_state()})
    utils.save_npy(run["clusters"], np.zeros((2, 44), np.int32))
    for key, estimate in (("checkpoint", ckpt), ("resume", resume), ("clusters", clusters)):
        size = os.path.getsize(run[key])
        assert size <= estimate <= 1.05 * size, key
    needed = ckpt + 2 * resume + clusters + disk_space.SMALL_FILES_BYTES
    folder = str(tmp_path)
    monkeypatch.setattr(disk_space, "free_bytes", lambda f: needed)
    disk_space.check_training_room(folder, [], model, 4, 2)
    monkeypatch.setattr(disk_space, "free_bytes", lambda f: needed - 1)
    with pytest.raises(UserError, match="training needs"):
        disk_space.check_training_room(folder, [], model, 4, 2)
    existing = sum(os.path.getsize(p) for p in run.values())
    monkeypatch.setattr(disk_space, "free_bytes", lambda f: needed - existing)
    disk_space.check_training_room(folder, list(run.values()), model, 4, 2)


# --- features, NormTerm --------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_feature_extraction_stops_at_a_full_disk_and_continues_when_run_again(disk, tmp_path, workers,
                                                                             capsys):
    audio, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(("a", "b", "c")):
        write_audio(str(audio / f"{name}.wav"), tone(1.5, i))
    full = disk("b.mat", room=300)
    argv = ["--input", audio, "--output", out, "--workers", workers]
    assert cli(feat_extract, argv) == 1
    assert capsys.readouterr().err == full_disk_message(str(out / "b.mat"), feat_extract.AFTER_FULL_DISK)
    kept = snapshot(out)
    assert "b.mat" not in kept and feat_extract.ERROR_RECORD not in kept and leftovers(str(out)) == []
    if workers == 1:
        assert full.hits and sorted(kept) == ["a.mat"]
    room_again()                       # (workers fork from this process)
    assert cli(feat_extract, argv) == 0
    assert f"3 WAV file(s) under {audio}: {3 - len(kept)} extracted, {len(kept)} already done" \
        in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["a.mat", "b.mat", "c.mat"]
    assert all(snapshot(out)[name] == body for name, body in kept.items())


def test_normterm_is_replaced_whole_or_not_at_all(corpus, disk, tmp_path, capsys):
    norm = str(tmp_path / "NormTerm")
    for path in norm_files(norm).values():
        utils.save_mat(path, utils.NORM_VAR, np.zeros((1, 1)))
    before = snapshot(norm)
    disk("val_norm_means.mat", room=100)
    argv = ["--labels", corpus["labels"], "--features", corpus["features"], "--norm-dir", norm]
    assert cli(norm_para, argv) == 1
    assert capsys.readouterr().err == full_disk_message(os.path.join(norm, "val_norm_means.mat"),
                                                        FREE_SPACE_AND_RERUN)
    assert snapshot(norm) == before          # every file the old one: no mix of old and new


@pytest.mark.parametrize("target, skip", [("*.wav", 5), (make_demo_corpus.MARKER_FILE, 0),
                                          (make_demo_corpus.LABEL_FILE, 0)])
def test_a_demo_corpus_stopped_by_a_full_disk_is_written_whole_when_run_again(disk, tmp_path, monkeypatch,
                                                                            target, skip, capsys):
    """A WAV, the marker or the labels file meets the full disk: one line, no temporary file;
    the same command then writes the corpus a run without a full disk writes."""
    sizes = ["--train", "8", "--validation", "2", "--test", "2", "--predict", "1", "--unlabeled", "0"]
    assert cli(make_demo_corpus, ["--out", tmp_path / "whole", *sizes]) == 0
    full = disk(target, skip=skip)
    argv = ["--out", tmp_path / "demo", *sizes]
    capsys.readouterr()
    assert cli(make_demo_corpus, argv) == 1
    path, = full.hits
    final = os.path.join(os.path.dirname(path), re.sub(r"^\.(.*)\.\w+\.tmp$", r"\1", os.path.basename(path)))
    assert capsys.readouterr().err == full_disk_message(final, FREE_SPACE_AND_RERUN)
    assert not [n for n in snapshot(tmp_path / "demo") if n.endswith(".tmp")]
    room_again(monkeypatch)
    assert cli(make_demo_corpus, argv) == 0
    assert snapshot(tmp_path / "demo") == snapshot(tmp_path / "whole")


# --- prediction ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predicted(corpus, models, tmp_path_factory):
    """A prediction of one 3-second file with every output, as a previous run left it."""
    tmp_path = tmp_path_factory.mktemp("predicted")
    audio, out = tmp_path / "in", tmp_path / "out"
    write_audio(str(audio / "a.wav"), tone(3.0))
    argv = predict_argv(corpus, models, audio, out / "pred.csv") + [
        "--window", "2", "--hop", "1", "--embeddings", out / "emb", "--plot", out / "plots"]
    assert cli(prediction_process, argv) == 0
    return argv, str(out)


@pytest.mark.parametrize("target", ["pred.csv", "emb/embeddings_Dom.npy", "emb/index.csv",
                                    "plots/a.wav.png"])
def test_prediction_outputs_meet_a_full_disk(predicted, disk, target, capsys):
    argv, out = predicted
    before = snapshot(out)
    assert target in before
    full = disk(os.path.basename(target), room=40)
    capsys.readouterr()
    assert cli(prediction_process, argv) == 1
    assert full.hits
    assert capsys.readouterr().err == full_disk_message(os.path.join(out, target), FREE_SPACE_AND_RERUN)
    assert snapshot(out) == before


# --- fetched models -------------------------------------------------------------------------------------
def test_a_fetch_stopped_by_a_full_disk_fetches_only_the_rest_when_run_again(
        release, server, disk, tmp_path, capsys):
    rel, contents = release
    target = rel.model_path("Dom", "Temp-GRU")
    full = disk(os.path.basename(target), room=fetch_models.BLOCK_SIZE)
    argv = ["fixture", "--base-url", server.base_url, "--dest", tmp_path]
    assert cli(fetch_models, argv) == 1
    assert full.hits
    path = os.path.join(str(tmp_path), "fixture", target)
    assert capsys.readouterr().err == full_disk_message(path, fetch_models.AFTER_FULL_DISK)
    first = file_contents(tmp_path / "fixture")
    assert target not in first and 0 < len(first) < len(contents)
    assert all(contents[p] == body for p, body in first.items()) and leftovers(str(tmp_path)) == []
    room_again()
    server.requests.clear()
    assert cli(fetch_models, argv) == 0
    assert sorted(server.requests) == sorted(url_path(p) for p in contents if p not in first)
    assert file_contents(tmp_path / "fixture") == contents


# --- sweeps ---------------------------------------------------------------------------------------------
def test_a_sweep_stopped_by_a_full_disk_continues_when_run_again(corpus, disk, tmp_path, monkeypatch,
                                                                capsys):
    out = tmp_path / "sweep"
    argv = ["-mt", "Temp-Triplet", "-emo", "Val", "-nc", K, "-ep", 1, "-batch", BATCH, "--seeds", "31",
            "--features", corpus["features"], "--labels", corpus["labels"], "--norm-dir", corpus["norm"],
            "--cache-dir", corpus["cache"], "--out", out]
    monkeypatch.setattr(reproduce, "usable_cores", lambda: 2)
    folder = out / "runs" / "Temp-Triplet_Val_K4_U0_auto_ep1_b4_seed31"
    files = run_files(folder, 1)
    # 1. The test (a child process, after the training) meets the full disk at its result.
    result = folder / "test_Test1.json"
    child = FullDisk(result.name, room=10)
    for key, value in child.child_env().items():
        monkeypatch.setenv(key, value)
    assert cli(reproduce, argv) == 1
    err = capsys.readouterr().err
    report = re.fullmatch(
        r"error: Temp-Triplet_Val_K4_U0_auto_ep1_b4_seed31 stopped, online_testing\.py: error: out of disk "
        r"space \(No space left on device\) writing (\S+): [\d.]+ [kMGT]?B free in (\S+); nothing "
        r"half-written was kept\. (.*)\n", err)
    assert report, err
    assert report.group(1) == str(result) and report.group(2) == str(folder)
    assert report.group(3) == reproduce.AFTER_FULL_DISK
    assert torch.load(files["resume"], weights_only=True)["epoch"] == 1 and not result.exists()
    row = read_rows(out / "results.csv")[0]
    assert row["status"] == "failed" and row["error"].endswith(FREE_SPACE_AND_RERUN)   # the script's advice
    for key in ("PYTHONPATH", "FULL_DISK"):
        monkeypatch.delenv(key)
    # 2. Run again: the model is tested; the sweep's results.csv meets a full disk.
    before = {}
    full = disk("results.csv", room=10, skip=1, on_hit=lambda: before.update(snapshot(out, temporary=False)))
    assert cli(reproduce, argv) == 1
    assert full.hits
    assert capsys.readouterr().err == full_disk_message(str(out / "results.csv"), reproduce.AFTER_FULL_DISK)
    after = snapshot(out)
    assert after["results.csv"] == before["results.csv"] and leftovers(str(out)) == []
    assert re.findall(r"reproduce\.py \((\w+),", open(folder / "main.log").read()) == ["train"]
    assert re.findall(r"reproduce\.py \((\w+),", open(folder / "test.log").read()) == ["test", "test"]
    # 3. Run again: nothing left to run; the results are written.
    room_again(monkeypatch)
    assert cli(reproduce, argv) == 0
    assert "1 already finished, 0 to run" in capsys.readouterr().out
    row = read_rows(out / "results.csv")[0]
    assert row["status"] == "ok" and float(row["CCC"]) == json.load(open(folder / "test_Test1.json"))["ccc"]


def test_a_sweep_log_that_meets_a_full_disk(corpus, disk, tmp_path, capsys):
    out = tmp_path / "sweep"
    disk("main.log")
    argv = ["-mt", "Temp-Triplet", "-emo", "Val", "-nc", K, "-ep", 1, "-batch", BATCH, "--seeds", "31",
            "--features", corpus["features"], "--labels", corpus["labels"], "--norm-dir", corpus["norm"],
            "--cache-dir", corpus["cache"], "--out", out]
    assert cli(reproduce, argv) == 1
    log = out / "runs" / "Temp-Triplet_Val_K4_U0_auto_ep1_b4_seed31" / "main.log"
    assert capsys.readouterr().err == (
        f"error: out of disk space (No space left on device) writing {log}: {FREE_TEXT} free in "
        f"{log.parent}. {reproduce.AFTER_FULL_DISK}\n")


# --- the one place that reports it ------------------------------------------------------------------------
def test_the_full_disk_error_survives_a_worker_process_and_names_a_quota(tmp_path):
    err = DiskFullError("/data/x.mat", os.strerror(errno.EDQUOT), 2_500_000_000)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) == ("out of disk space (Disk quota exceeded) writing /data/x.mat: "
                                     "2.5 GB free in /data; nothing half-written was kept")
    # EDQUOT as ENOSPC; anything else is not a full disk, and keeps its traceback.
    for code, reported in ((errno.EDQUOT, True), (errno.EACCES, False)):
        try:
            with utils.atomic_path(tmp_path / "y.json") as tmp:
                with open(tmp, "w") as f:
                    f.write("{")
                    raise OSError(code, os.strerror(code))
        except DiskFullError as e:
            assert reported and e.path == str(tmp_path / "y.json")
        except OSError as e:
            assert not reported and e.errno == code
        assert os.listdir(tmp_path) == []


def test_standard_output_on_a_full_disk_is_one_line(capsys):
    def prints_to_a_full_disk():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(prints_to_a_full_disk, disk_full=feat_extract.AFTER_FULL_DISK)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == ("error: out of disk space (No space left on device). "
                                       f"{feat_extract.AFTER_FULL_DISK}\n")


def test_a_real_full_filesystem(tmp_path):
    """A 1 MB tmpfs: what the OS, numpy, scipy, torch.save and PIL really raise is reported."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = str(tmp_path / "small")
    os.makedirs(folder)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        rng = np.random.default_rng(0)
        big = rng.standard_normal(400_000)                        # 3.2 MB, or 8 MB as JSON text

        def png(values):
            fig = plt.figure(figsize=(1, 1) if values.size < 10 else (20, 20))
            plt.imshow(rng.random((2000, 2000)) if values.size >= 10 else values.reshape(1, -1))
            with utils.atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100)           # noise: a PNG of megabytes
            plt.close(fig)

        writes = {"x.pth.tar": lambda v: utils.save_torch(path, {"w": torch.from_numpy(v)}),
                  "x.npy": lambda v: utils.save_npy(path, v),
                  "x.mat": lambda v: utils.save_mat(path, "v", v),
                  "x.json": lambda v: utils.save_json(path, v.tolist()), "x.png": png}
        for name, write in writes.items():
            path = os.path.join(folder, name)
            write(np.ones(3))
            before = open(path, "rb").read()
            with pytest.raises(DiskFullError) as err:
                write(big)
            assert str(err.value).startswith(f"out of disk space (No space left on device) writing {path}: ")
            assert open(path, "rb").read() == before and leftovers(folder) == [], name
    finally:
        subprocess.run(["umount", folder], check=True)


# --- labels ---------------------------------------------------------------------------------------------
def labels_file(path, rows):
    """rows: (FileName, split); every label 4.0."""
    return write_labels(str(path), [{"FileName": n, "EmoAct": 4.0, "EmoVal": 4.0, "EmoDom": 4.0,
                                     "Split_Set": s} for n, s in rows],
                        ["FileName", "EmoAct", "EmoVal", "EmoDom", "Split_Set"])


def test_a_turn_listed_twice_in_a_split_is_refused_with_the_count_and_names(tmp_path):
    rows = [(f"t{i}.wav", "Train") for i in range(9)] + [("v.wav", "Validation")]
    rows += [("t1.wav", "Train"), ("t1", "Train"), ("sub/t2.wav", "Train")]   # .wav, folder dropped
    rows += [(f"t{i}.wav", "Train") for i in range(3, 8)]
    path = labels_file(tmp_path / "labels.csv", rows)
    with pytest.raises(UserError) as err:
        read_labels(path, "Train", ("Val",))
    assert str(err.value) == (
        f"labels file {path} lists 7 turn(s) of the split 'Train' more than once, e.g. t1 (3 rows), "
        "t2 (2 rows), t3 (2 rows), t4 (2 rows), t5 (2 rows): each turn needs one row (a repeated "
        "row would train or test on that turn twice)")
    assert read_labels(path, "Validation", ("Val",))[0] == ["v"]   # a split without repeats is read


def test_a_turn_in_two_splits_is_refused_naming_the_splits(corpus, tmp_path, capsys):
    rows = [(r["FileName"], r["Split_Set"]) for r in read_rows(corpus["labels"])]
    train = [n for n, s in rows if s == "Train"]
    leaking = rows + [(train[0], "Test1"), (train[1][:-4], "Test1"), (train[1], "Validation")]
    path = labels_file(tmp_path / "leak.csv", leaking)
    t0, t1 = train[0][:-4], train[1][:-4]
    with pytest.raises(UserError) as err:
        read_labels(path, "Train")
    assert str(err.value) == (
        f"labels file {path} lists turns of the split 'Train' in another split too: 2 in 'Test1' "
        f"(e.g. {t0}, {t1}); 1 in 'Validation' (e.g. {t1}). A turn in two splits leaks test "
        "data into training (train/test leakage): give each turn one split")
    # Every script that reads the file refuses it, before any work.
    model_dir = tmp_path / "m"
    assert cli(train_script, train_argv(corpus, model_dir, labels=path)) == 1
    assert capsys.readouterr().err == f"error: {err.value}\n"
    assert not model_dir.exists()
    save_models(model_dir, epochs=3)
    assert cli(online_testing, train_argv(corpus, model_dir, labels=path)) == 1
    assert "lists turns of the split 'Test1' in another split too: 2 in 'Train'" in capsys.readouterr().err
    assert cli(norm_para, ["--labels", path, "--features", corpus["features"],
                           "--norm-dir", tmp_path / "norm"]) == 1
    assert capsys.readouterr().err == f"error: {err.value}\n"
    out = tmp_path / "sweep"
    assert cli(reproduce, ["-mt", "Temp-GRU", "-emo", "Val", "--seeds", "1", "--features", corpus["features"],
                           "--labels", path, "--norm-dir", corpus["norm"], "--out", out]) == 1
    assert capsys.readouterr().err == f"error: {err.value}\n"
    assert not out.exists()
