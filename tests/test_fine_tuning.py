"""main.py --init-from (issue 30): the source's weights are really loaded (the first forward pass
equals the source's), every mismatch is refused in one line before any work, the starting point
is recorded in the checkpoint and the history, --resume continues exactly without loading the
source again, a fine-tuned checkpoint keeps the released format and loads in testing and
prediction, the source's feature statistics make the run's own NormTerm pair, and reproduce.py
takes --init-from as a grid axis.

Releases are written with random weights (conftest.write_random_release) into a temporary
released/ folder; nothing here reads a real release. The file trains about eight tiny epochs
(16 Train turns, -batch 4).
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import main as train_main
import online_testing
import prediction_process
import reproduce
from support import ROOT
from support.models import write_random_release
from deepemocluster import fine_tuning, releases
from deepemocluster.compute import single_process
from deepemocluster.features import load_norm_term, norm_files
from deepemocluster.labels import label_norm_term
from model import (ARCH, build_model, checkpoint_name, load_model, read_checkpoint,
                   released_state_dict)
from utils import EMOTIONS, NORM_VAR, UserError, save_mat, save_torch

MT, K, EMO = "Temp-CNN", 10, "Act"          # the random v1.8 release's Act model
ENCODER = ("cnn_features.", "cnn_out.")


def release_model(root, emo=EMO, mt=MT):
    return os.path.join(str(root), "v1.8", releases.RELEASES["v1.8"].model_path(emo, mt))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A released/ folder holding v1.8 (Temp-CNN) and v1.8-ssl (Temp-Trans), random weights."""
    root = tmp_path_factory.mktemp("released")
    write_random_release(root, "v1.8", MT)
    write_random_release(root, "v1.8-ssl", "Temp-Trans")
    return root


@pytest.fixture
def release(released, monkeypatch):
    monkeypatch.setattr(releases, "RELEASED_DIR", str(released))
    return released


def flags(corpus, base, epochs=2, *extra, norm=None):
    return ["-ep", str(epochs), "-batch", "4", "-emo", EMO, "-nc", str(K), "-mt", MT,
            "--precision", "fp32", "--compile", "off", "--features", corpus["features"],
            "--labels", corpus["labels"], "--norm-dir", norm or corpus["norm"],
            "--model-dir", str(base / "models"), "--cache-dir", str(base / "cache"), *extra]


def files_of(base, epochs=2):
    stem = str(base / "models" / checkpoint_name(epochs, 4, K, EMO, MT))[:-len(".pth.tar")]
    return {"checkpoint": stem + ".pth.tar", "history": stem + "_history.json",
            "resume": stem + "_resume.pth.tar", "clusters": stem + "_clusters.npy"}


FINE_TUNING = ["--init-from", "v1.8", "--init-freeze-epochs", "1", "--init-lr-scale", "0.5"]


@pytest.fixture(scope="module")
def fine_tuned(tiny_corpus, released, tmp_path_factory):
    """Two epochs from the v1.8 release, the encoder held for the first, rates halved."""
    base = tmp_path_factory.mktemp("fine_tuned")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(releases, "RELEASED_DIR", str(released))
        assert train_main.main(flags(tiny_corpus, base, 2, *FINE_TUNING)) is None
    return base


# --- the weights ------------------------------------------------------------------------------
def test_first_forward_pass_equals_the_sources(tiny_corpus, release, tmp_path):
    """The model main.py builds and starts from the release computes what the release's model
    computes: the same embeddings, predictions and cluster features (the cluster head is off,
    as at every epoch's k-means); a model from scratch does not."""
    args = train_main.parse_args(flags(tiny_corpus, tmp_path, 2, "--init-from", "v1.8"))
    settings = single_process("cpu", "fp32")
    start = fine_tuning.starting_point(args, settings, str(tmp_path / "no_history.json"))
    model, _ = train_main.build_training_model(args, settings, 16)
    scratch = [p.detach().clone() for p in model.parameters()]
    optimizers = train_main.make_optimizers(model)
    fine_tuning.start_from(model, optimizers, start, resume=False)
    source = load_model(release_model(release), MT, K)
    source.remove_cluster_head()
    chunks = torch.randn(3, 11, 62, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model.eval()(chunks), source(chunks)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(scratch, model.parameters()))
    assert [g["lr"] for o in optimizers for g in o.param_groups] == [train_main.SGD_LR, train_main.ADAM_LR]
    # The cluster top layer is not the source's: each epoch makes it anew.
    model.restore_cluster_head()
    released_top = read_checkpoint(release_model(release))["state_dict"]["top_layer_class.weight"]
    assert model.top_layer_class.weight.shape == released_top.shape
    assert not torch.equal(model.top_layer_class.weight.detach(), released_top)


def test_a_checkpoint_file_is_a_source_too(tiny_corpus, tmp_path):
    torch.manual_seed(3)
    source = build_model("Temp-Triplet", 4)
    path = tmp_path / "my_model.pth.tar"
    save_torch(path, {"arch": ARCH, "state_dict": released_state_dict(source)})
    args = train_main.parse_args(flags(tiny_corpus, tmp_path, 1, "--init-from", str(path))
                                 + ["-mt", "Temp-Triplet", "-nc", "4"])
    settings = single_process("cpu", "fp32")
    start = fine_tuning.starting_point(args, settings, str(tmp_path / "no_history.json"))
    assert (start.kind, start.checkpoint, start.sha256) == ("checkpoint", str(path),
                                                            fine_tuning.file_sha256(path))
    model, _ = train_main.build_training_model(args, settings, 16)
    fine_tuning.start_from(model, train_main.make_optimizers(model), start, resume=False)
    source.eval().remove_cluster_head()
    chunks = torch.randn(2, 11, 62, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(model.eval()(chunks), source(chunks)):
            assert torch.equal(a, b)


# --- refusals -----------------------------------------------------------------------------------
def write_checkpoint(path, mt=MT, k=K, drop=(), state=True):
    torch.manual_seed(0)
    weights = released_state_dict(build_model(mt, k))
    for key in drop:
        weights.pop(key)
    save_torch(path, {"arch": ARCH, "state_dict": weights} if state else {"weights": weights})
    return str(path)


def refusals(tmp, released):
    """(argv change, message) of each source that does not fit."""
    named_val = tmp / checkpoint_name(30, 64, K, "Val", MT)
    shutil.copy(release_model(released, "Val"), named_val)
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    return [
        (["--init-from", write_checkpoint(tmp / "triplet.pth.tar", "Temp-Triplet")],
         f"holds a Temp-Triplet model, but -mt {MT} was given: give -mt Temp-Triplet, or a source of {MT}"),
        (["--init-from", "v1.8-ssl"], f"release v1.8-ssl has no {MT} models (it has: Temp-Trans)"),
        (["--init-from", "v1.8", "-nc", "4"],
         "--init-from v1.8: its Act model has 10 clusters, but -nc 4 was given: give -nc 10"),
        (["--init-from", "v1.8-ssl", "-mt", "Temp-Trans"],
         "--init-from v1.8-ssl: its Act model has 30 clusters, but -nc 10 was given: give -nc 30"),
        (["--init-from", write_checkpoint(tmp / "k4.pth.tar", k=4)],
         "was trained with 4 clusters, but -nc 10 was given: give -nc 4"),
        (["--init-from", str(named_val)],
         "is a model of Val (its name says so), but -emo Act was given: give -emo Val, or a checkpoint of Act"),
        (["--init-from", str(tmp / "notes.txt")], "the file is damaged or not a PyTorch checkpoint"),
        (["--init-from", write_checkpoint(tmp / "plain.pth.tar", state=False)],
         "not a TempDeepEmoCluster checkpoint (no 'state_dict')"),
        (["--init-from", write_checkpoint(tmp / "partial.pth.tar", drop=("emo_regressor.0.weight",))],
         f"is not a checkpoint of a {MT} model with 10 clusters: it lacks emo_regressor.0.weight"),
        (["--init-from", "v1.8", "-mt", "Temp-GRU"], "release v1.8 is not installed in"),
        (["--init-from", str(tmp / "nowhere.pth.tar")],
         "neither a release (v1.8, v1.8-ssl) nor a checkpoint file: give an installed release's name"),
        (["--init-from", write_checkpoint(tmp / "mine.pth.tar"), "--init-feature-norm", "source"],
         "is a checkpoint file, whose feature statistics are in the NormTerm folder it was trained "
         "with: give it with --init-norm-dir DIR"),
    ]


def test_each_mismatch_is_refused_in_one_line_before_any_work(tiny_corpus, release, tmp_path):
    (tmp_path / "sources").mkdir()
    for change, message in refusals(tmp_path / "sources", release):
        base = tmp_path / "run"
        with pytest.raises(UserError) as err:
            train_main.main(flags(tiny_corpus, base, 1) + change)
        text = str(err.value)
        assert message in text and "\n" not in text, (change, text)
        assert not (base / "cache").exists() and not (base / "models").exists()


def test_source_feature_norm_refuses_a_norm_dir_of_another_pair(tiny_corpus, release, tmp_path):
    with pytest.raises(UserError) as err:
        train_main.main(flags(tiny_corpus, tmp_path, 1, "--init-from", "v1.8",
                              "--init-feature-norm", "source"))
    norm = os.path.normpath(tiny_corpus["norm"])
    assert str(err.value) == (
        f"--init-feature-norm source: --norm-dir {tiny_corpus['norm']} holds other feature statistics "
        "than this run trains with (v1.8's features, the corpus's Train labels), those of another "
        f"model: give a NormTerm folder of this run's own, e.g. --norm-dir {norm}_v1.8, which "
        "main.py fills")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv, message", [
    (["--init-freeze-epochs", "2"], "--init-freeze-epochs: for fine-tuning only (give --init-from SOURCE)"),
    (["--init-from", "v1.8", "--init-norm-dir", "x"], "--init-norm-dir: for --init-feature-norm source only"),
    (["--init-from", "v1.8", "--init-lr-scale", "0"], "--init-lr-scale must be above 0, got 0"),
])
def test_flag_misuse_is_an_argparse_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


# --- what a fine-tuning writes -------------------------------------------------------------------
def test_the_checkpoint_keeps_the_released_format_and_records_the_start(fine_tuned, released):
    files = files_of(fine_tuned)
    ckpt = read_checkpoint(files["checkpoint"])
    assert set(ckpt) == {"arch", "state_dict", "init_from"} and ckpt["arch"] == ARCH
    assert list(ckpt["state_dict"]) == list(released_state_dict(build_model(MT, K)))
    source = release_model(released)
    record = {"source": "v1.8", "kind": "release", "checkpoint": os.path.abspath(source),
              "sha256": fine_tuning.file_sha256(source), "feature_norm": "corpus",
              "freeze_epochs": 1, "lr_scale": 0.5}
    assert ckpt["init_from"] == record
    with open(files["history"]) as f:
        history = json.load(f)
    assert history["init_from"] == record and len(history["val_loss"]) == 2


def test_the_encoder_is_held_for_the_first_epochs(fine_tuned, released, tiny_corpus, tmp_path):
    """After epoch 1 of the fine-tuning (its resume state) the encoder's weights are the source's,
    its BatchNorm statistics and the heads moved; epoch 2 trains the encoder too."""
    source = read_checkpoint(release_model(released))["state_dict"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(releases, "RELEASED_DIR", str(released))
        train_main.main(flags(tiny_corpus, tmp_path, 1, *FINE_TUNING))
    after_one = read_checkpoint(files_of(tmp_path, 1)["resume"])["state_dict"]
    after_two = read_checkpoint(files_of(fine_tuned)["resume"])["state_dict"]
    weights = [k for k in source if k.startswith(tuple(p.replace(".", ".module.") for p in ENCODER))
               and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(weights) == 2 * 7 * 2 + 2       # 7 conv blocks (conv, BatchNorm), the Linear
    assert all(torch.equal(after_one[k], source[k]) for k in weights)
    assert not torch.equal(after_one["cnn_features.module.1.running_mean"],
                           source["cnn_features.module.1.running_mean"])
    assert not torch.equal(after_one["emo_regressor.0.weight"], source["emo_regressor.0.weight"])
    assert not torch.equal(after_two["cnn_features.module.0.weight"], source["cnn_features.module.0.weight"])
    resume = read_checkpoint(files_of(fine_tuned)["resume"])
    assert [g["lr"] for g in resume["sgd"]["param_groups"]] == [train_main.SGD_LR * 0.5]
    assert [g["lr"] for g in resume["adam"]["param_groups"]] == [train_main.ADAM_LR * 0.5]


def test_resume_continues_exactly_without_loading_the_source_again(
        fine_tuned, released, tiny_corpus, tmp_path, monkeypatch):
    """Stopped in epoch 2, resumed with the release gone: the same files as the run that was
    not stopped."""
    monkeypatch.setattr(releases, "RELEASED_DIR", str(released))
    calls = []
    real = train_main.train_one_epoch

    def stop_in_epoch_2(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise UserError("stopped")
        return real(*args, **kw)
    argv = flags(tiny_corpus, tmp_path, 2, *FINE_TUNING)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_main, "train_one_epoch", stop_in_epoch_2)
        with pytest.raises(UserError, match="stopped"):
            train_main.main(argv)
    monkeypatch.setattr(releases, "RELEASED_DIR", str(tmp_path / "no_release_here"))
    # Flags that contradict the recorded start are refused; the same ones, or none, continue.
    with pytest.raises(UserError, match="--resume: this run started with --init-lr-scale 0.5, not 1.0"):
        train_main.main(argv[:-2] + ["--resume"])
    assert train_main.main(argv + ["--resume"]) is None
    ours, reference = files_of(tmp_path), files_of(fine_tuned)
    for key in ("checkpoint", "resume"):
        a, b = read_checkpoint(ours[key]), read_checkpoint(reference[key])
        assert list(a["state_dict"]) == list(b["state_dict"])
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    np.testing.assert_array_equal(np.load(ours["clusters"]), np.load(reference["clusters"]))
    with open(ours["history"]) as f, open(reference["history"]) as g:
        a, b = json.load(f), json.load(g)
    for key in ("train_loss", "val_loss", "nmi", "init_from"):
        assert a[key] == b[key]


def test_resume_of_a_run_from_scratch_refuses_init_from(tiny_corpus, tmp_path):
    history = tmp_path / "h.json"
    history.write_text(json.dumps({"val_loss": [1.0]}))
    args = train_main.parse_args(flags(tiny_corpus, tmp_path, 2, "--init-from", "v1.8", "--resume"))
    with pytest.raises(UserError, match="--resume: this run started from scratch, not from --init-from v1.8"):
        fine_tuning.starting_point(args, single_process("cpu", "fp32"), str(history))


def test_a_fine_tuned_model_is_tested_and_predicts_with_the_usual_flags(fine_tuned, tiny_corpus, tmp_path):
    models = fine_tuned / "models"
    usual = ["-ep", "2", "-batch", "4", "-nc", str(K), "-mt", MT, "--model-dir", str(models),
             "--norm-dir", tiny_corpus["norm"], "--precision", "fp32"]
    args = online_testing.parse_args(usual + ["-emo", EMO, "--features", tiny_corpus["features"],
                                              "--labels", tiny_corpus["labels"],
                                              "--cache-dir", str(tmp_path / "cache")])
    ccc, pred, truth = online_testing.test_ccc(args)
    assert np.isfinite(ccc) and len(pred) == len(truth) == 6
    for emo in ("Dom", "Val"):
        shutil.copy(models / checkpoint_name(2, 4, K, EMO, MT), tmp_path / checkpoint_name(2, 4, K, emo, MT))
    shutil.copy(models / checkpoint_name(2, 4, K, EMO, MT), tmp_path / checkpoint_name(2, 4, K, EMO, MT))
    usual[usual.index("--model-dir") + 1] = str(tmp_path)
    out = tmp_path / "pred.csv"
    assert prediction_process.main(usual + ["--input", tiny_corpus["audio"], "--output", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 28 and np.isfinite(np.array([r[1:] for r in rows[1:]], float)).all()


def test_source_feature_norm_writes_the_runs_own_pair(tiny_corpus, release, tmp_path):
    """--init-feature-norm source: --norm-dir, absent, becomes the release's feature statistics
    with the corpus's Train label statistics; started again, the pair is accepted as it is."""
    norm = str(tmp_path / "NormTerm_v1.8")
    argv = flags(tiny_corpus, tmp_path, 1, "--init-from", "v1.8", "--init-feature-norm", "source",
                 norm=norm)
    settings = single_process("cpu", "fp32")
    for _ in range(2):
        start = fine_tuning.starting_point(train_main.parse_args(argv), settings, "none.json")
    assert start.feature_norm == "source"
    pair, released_norm = load_norm_term(norm), load_norm_term(str(release / "v1.8" / "NormTerm"))
    _, corpus = label_norm_term(tiny_corpus["labels"])
    np.testing.assert_array_equal(pair["features"].mean, released_norm["features"].mean)
    np.testing.assert_array_equal(pair["features"].std, released_norm["features"].std)
    assert {f"{e}_{s}": pair[f"{e}_{s}"] for e in EMOTIONS for s in ("mean", "std")} == corpus
    assert corpus == {k: v for k, v in load_norm_term(tiny_corpus["norm"]).items() if k != "features"}


# --- reproduce.py: --init-from as a grid axis -------------------------------------------------
def test_reproduce_takes_init_from_as_a_grid_axis(tiny_corpus, tmp_path):
    source = write_checkpoint(tmp_path / "source.pth.tar", "Temp-Triplet", 4)
    out = tmp_path / "sweep"
    grid = ["-mt", "Temp-Triplet", "-emo", "Act", "-nc", "4", "-ep", "1", "-batch", "4",
            "--seeds", "31", "--features", tiny_corpus["features"], "--labels", tiny_corpus["labels"],
            "--norm-dir", tiny_corpus["norm"], "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    with pytest.raises(UserError, match="was trained with 4 clusters, but -nc 5 was given"):
        reproduce.main([a if a != "4" else "5" for a in grid[:6]] + grid[6:] + ["--init-from", f"none,{source}"])
    assert not (out / "runs").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reproduce, "usable_cores", lambda: 2)
        assert reproduce.main(grid + ["--init-from", f"none,{source}"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["init_from"] for r in rows] == ["none", source] and all(r["status"] == "ok" for r in rows)
    scratch, tuned = (out / "runs" / f"Temp-Triplet_Act_K4_U0_auto_ep1_b4{tag}_seed31"
                      for tag in ("", reproduce.init_tag(source)))
    assert reproduce.init_tag(source).startswith("_from-source-")
    name = checkpoint_name(1, 4, 4, "Act", "Temp-Triplet")
    assert "init_from" not in read_checkpoint(str(scratch / name))
    assert read_checkpoint(str(tuned / name))["init_from"]["checkpoint"] == source
    assert f"--init-from {source}" in (tuned / "main.log").read_text()
    md = (out / "results.md").read_text()
    assert "## K = 4, unlabel 0, precision auto, epochs 1, batch 4, Test1\n" in md
    assert f"## K = 4, unlabel 0, precision auto, epochs 1, batch 4, Test1, from {source}\n" in md
    assert f"| starting point | none − {source} | Temp-Triplet, K = 4, unlabel 0, precision auto" in md


def test_a_results_csv_without_the_init_from_column_is_read_as_from_scratch(tmp_path):
    from sweep.report import COLUMNS, read_results

    old = [c for c in COLUMNS if c != "init_from"]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerow({"type": MT, "attribute": EMO, "K": 10, "unlabel": 0, "seed": 31, "epochs": 30,
                    "batch": 64, "split": "Test1", "CCC": 0.5, "best_epoch": 3, "seconds": 1.0,
                    "precision": "auto", "device": "cpu (bf16)", "commit": "abc", "status": "ok",
                    "error": ""})
    assert [r["init_from"] for r in read_results(str(tmp_path))] == ["none"]
    assert reproduce.main(["--report", str(tmp_path)]) == 0
    assert "## K = 10, unlabel 0, precision auto, epochs 30, batch 64, Test1\n" in (tmp_path / "results.md").read_text()


# --- torchrun -------------------------------------------------------------------------------------
def test_a_fine_tuning_under_torchrun_is_that_of_one_process(tiny_corpus, tmp_path):
    """2 processes (gloo, CPU) and 1 process, from the same checkpoint with its own feature
    statistics: rank 0 writes the run's NormTerm pair, every process starts from the source
    (epoch 1's k-means assignment, made from the features of both processes' shares, is the
    1-process one), and the losses and the record are those of one process (the losses to the
    float rounding of the exchanges, which Adam's normalised steps carry over 4 batches)."""
    source = write_checkpoint(tmp_path / "source.pth.tar", "Temp-Triplet", 4)
    source_norm = tmp_path / "source_norm"
    for key, path in norm_files(str(source_norm)).items():
        if key.startswith("feat"):
            save_mat(path, NORM_VAR, np.full((1, 128), 2.0 if key == "feat_mean" else 3.0))

    def argv(name):
        return ["-ep", "1", "-batch", "4", "-emo", EMO, "-nc", "4", "-mt", "Temp-Triplet",
                "--precision", "fp32", "--compile", "off", "--seed", "7",
                "--features", tiny_corpus["features"], "--labels", tiny_corpus["labels"],
                "--norm-dir", str(tmp_path / name / "NormTerm"), "--model-dir", str(tmp_path / name / "models"),
                "--cache-dir", str(tmp_path / name / "cache"), "--init-from", source,
                "--init-feature-norm", "source", "--init-norm-dir", str(source_norm)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            "2", "main.py"] + argv("two"), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert train_main.main(argv("one")) is None
    out, err = two.communicate(timeout=900)
    assert two.returncode == 0, err[-3000:]
    assert "on 2 processes (gloo, cpu, fp32)" in out
    assert out.count(f"starting from checkpoint {source}: features normalised with the source's") == 1
    name = checkpoint_name(1, 4, 4, EMO, "Temp-Triplet")[:-len(".pth.tar")]
    runs = {}
    for key in ("one", "two"):
        folder = tmp_path / key / "models"
        with open(folder / (name + "_history.json")) as f:
            runs[key] = {"history": json.load(f), "clusters": np.load(folder / (name + "_clusters.npy")),
                         "record": read_checkpoint(str(folder / (name + ".pth.tar")))["init_from"],
                         "norm": load_norm_term(str(tmp_path / key / "NormTerm"))}
    one, two = runs["one"], runs["two"]
    np.testing.assert_array_equal(two["clusters"], one["clusters"])
    assert two["history"]["train_loss"][0] == pytest.approx(one["history"]["train_loss"][0], rel=1e-3)
    assert two["history"]["val_loss"][0] == pytest.approx(one["history"]["val_loss"][0], rel=1e-3)
    assert two["record"] == one["record"] and two["record"]["feature_norm"] == "source"
    for key, value in one["norm"].items():
        np.testing.assert_array_equal(*(getattr(n[key], "mean", n[key]) for n in (two["norm"], one["norm"])))
        np.testing.assert_array_equal(*(getattr(n[key], "std", n[key]) for n in (two["norm"], one["norm"])))
    np.testing.assert_array_equal(two["norm"]["features"].mean, np.full(128, 2.0))
    np.testing.assert_array_equal(two["norm"]["features"].std, np.full(128, 3.0))
