"""A newcomer's first hour: finished models are never replaced without being asked,
outputs are readable like ordinary files, and the training plots explain themselves."""
import argparse
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import feat_extract
import main as train_main
import norm_para
import online_testing
import prediction_process
from deepemocluster import training_files
from model import ARCH, build_model, checkpoint_name, released_state_dict
from support import ROOT
from support.audio import SR, tone_turn
from support.cli import cli, run_script
from utils import save_torch

SHIPPED = os.path.join(ROOT, "trained_models",
                       "TempDeepEmoCluster_epoch30_batch64_10clusters_Val_Temp-Triplet.pth.tar")


def tiny_argv(corpus, model_dir, *extra):
    return ["-ep", "1", "-batch", "4", "-nc", "4", "-emo", "Val", "-mt", "Temp-Triplet",
            "--features", corpus["features"], "--labels", corpus["labels"], "--norm-dir",
            corpus["norm"], "--model-dir", str(model_dir), "--cache-dir",
            os.path.join(corpus["root"], "cache"), *extra]


def test_the_shipped_models_command_is_refused_and_the_model_untouched():
    before = open(SHIPPED, "rb").read()
    mtime = os.stat(SHIPPED).st_mtime_ns
    rc, out, err = run_script("main.py", "-ep", "30", "-batch", "64", "-emo", "Val", "-nc", "10",
                              "-mt", "Temp-Triplet")
    assert rc == 1 and "Traceback" not in err
    assert f"{os.path.join('.', 'trained_models', os.path.basename(SHIPPED))} already holds a checkpoint" in err
    assert "--overwrite" in err and "--model-dir DIR" in err
    assert open(SHIPPED, "rb").read() == before and os.stat(SHIPPED).st_mtime_ns == mtime


def test_overwrite_replaces_and_resume_continues(tiny_corpus, tmp_path, capsys):
    model_dir = tmp_path / "models"
    assert train_main.main(tiny_argv(tiny_corpus, model_dir)) is None
    assert "4 clusters, 1 epoch, batch 4" in capsys.readouterr().out
    ckpt = model_dir / checkpoint_name(1, 4, 4, "Val", "Temp-Triplet")
    first = ckpt.read_bytes()
    assert cli(train_main.main, tiny_argv(tiny_corpus, model_dir)) == 1
    err = capsys.readouterr().err
    assert f"{ckpt} already holds a checkpoint" in err and "--resume" in err
    assert ckpt.read_bytes() == first
    assert cli(train_main.main, tiny_argv(tiny_corpus, model_dir, "--overwrite", "--seed", "5")) == 0
    assert ckpt.read_bytes() != first
    with pytest.raises(SystemExit) as exit_info:
        train_main.parse_args(tiny_argv(tiny_corpus, model_dir, "--overwrite", "--resume"))
    assert exit_info.value.code == 2


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_get_the_permissions_of_an_ordinary_write(umask, mode, tmp_path):
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), tone_turn(np.random.default_rng(0), 4.0, 3.0), SR, subtype="PCM_16")
    old = os.umask(umask)
    try:
        feature = tmp_path / "features" / "turn.mat"
        assert feat_extract.extract_one((str(wav), str(feature)))[1] == "ok"
        checkpoint = tmp_path / "models" / "model.pth.tar"
        save_torch(str(checkpoint), {"arch": ARCH, "state_dict": released_state_dict(build_model("Temp-CNN", 4))})
        table = tmp_path / "pred_result.csv"
        prediction_process.write_csv(str(table), ["File_Name", "Aro-Score"], [("turn.wav", 4.0)])
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(plain).st_mode) == mode
    for path in (feature, checkpoint, table):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def plotted(monkeypatch, history, title="Temp-CNN, Val, K = 4, 3 epochs, batch 4"):
    """The two figures plot_trends draws, captured instead of written."""
    figures = []
    monkeypatch.setattr(training_files, "save_figure", lambda fig, path: figures.append((fig, path)))
    run = type("TrainingFiles", (), {"nmi_val_plot": "a.png", "train_plot": "b.png"})()
    training_files.plot_trends(history, run, title)
    return figures


def test_plots_name_the_run_and_mark_the_saved_epoch(monkeypatch):
    history = {"train_loss": [2.0, 1.5, 1.2], "unsup_loss": [None] * 3, "val_loss": [0.9, 0.7, 0.8],
               "nmi": [None, 0.4, 0.6], "seconds": [1, 1, 1]}
    (nmi_fig, _), (loss_fig, _) = plotted(monkeypatch, history)
    for fig in (nmi_fig, loss_fig):
        title = fig._suptitle.get_text()
        assert "Temp-CNN, Val, K = 4, 3 epochs" in title
        marks = [ln for ax in fig.axes for ln in ax.lines if list(ln.get_xdata()) == [2, 2]]
        assert len(marks) == 1 and "saved epoch (2)" in marks[0].get_label()
    assert len(nmi_fig.axes) == 2
    assert [list(ln.get_ydata()) for ln in nmi_fig.axes[1].lines][0][1:] == [0.4, 0.6]


def test_a_one_epoch_run_draws_no_empty_nmi_axis(monkeypatch):
    history = {"train_loss": [2.0], "unsup_loss": [None], "val_loss": [0.9], "nmi": [None],
               "seconds": [1]}
    (nmi_fig, _), _ = plotted(monkeypatch, history, "Temp-CNN, Val, K = 4, 1 epoch, batch 4")
    assert len(nmi_fig.axes) == 1
    assert "NMI needs two epochs" in nmi_fig._suptitle.get_text()
    assert all("NMI" not in ax.get_ylabel() for ax in nmi_fig.axes)


@pytest.mark.parametrize("n_epochs", [1, 2, 3])
def test_plots_tick_whole_epochs_and_count_them_in_words(monkeypatch, n_epochs):
    history = {"train_loss": [2.0, 1.5, 1.2][:n_epochs], "unsup_loss": [None] * n_epochs,
               "val_loss": [0.9, 0.7, 0.8][:n_epochs], "nmi": [None, 0.4, 0.6][:n_epochs],
               "seconds": [1] * n_epochs}
    args = argparse.Namespace(model_type="Temp-CNN", emo_attr="Val", num_clusters=4, epochs=n_epochs,
                              batch_size=4, unlabel_size=0)
    words = "1 epoch" if n_epochs == 1 else f"{n_epochs} epochs"
    for fig, _ in plotted(monkeypatch, history, training_files.run_title(args)):
        assert fig._suptitle.get_text().startswith(f"Temp-CNN, Val, K = 4, {words}, batch 4\n")
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            assert all(tick == round(tick) for tick in ax.get_xticks())
            assert [tick for tick in ax.get_xticks() if low <= tick <= high] == list(range(1, n_epochs + 1))


DEMO_LABELS_MISSING = (
    "error: labels file not found: ./demo_corpus/Labels/labels_concensus.csv, the demo corpus's (not "
    "made yet): make the demo corpus with `.venv/bin/python make_demo_corpus.py` and its features with "
    "`.venv/bin/python feat_extract.py`; or give your own corpus's labels file with --labels FILE (and "
    "its features with --features DIR)\n")
TEST_FLAGS = ["-ep", "1", "-batch", "8", "-emo", "Act", "-nc", "10", "-mt", "Temp-Triplet"]


@pytest.mark.parametrize("script, argv", [
    (online_testing, TEST_FLAGS),
    (online_testing, TEST_FLAGS + ["--norm-dir", "NormTerm_demo"]),
    (train_main, TEST_FLAGS + ["--norm-dir", "NormTerm_demo", "--model-dir", "demo_models"]),
    (norm_para, ["--norm-dir", "NormTerm_demo"]),
])
def test_a_fresh_clone_without_the_demo_corpus_is_told_how_to_make_it_or_to_give_labels(
        script, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(script.main, argv) == 1
    assert capsys.readouterr().err == DEMO_LABELS_MISSING
    assert cli(script.main, argv + ["--labels", "mine.csv"]) == 1
    assert capsys.readouterr().err == ("error: labels file not found: mine.csv; give your own corpus's "
                                       "labels file with --labels FILE (and its features with "
                                       "--features DIR)\n")


def test_the_normterm_hint_names_the_corpus_and_its_command_works(tiny_corpus, tmp_path, capsys):
    """The norm_para.py command the error gives computes the NormTerm from the corpus the test was
    given; after it, online_testing.py gets past the NormTerm (to the missing checkpoint)."""
    norm = str(tmp_path / "norm")
    argv = TEST_FLAGS + ["--labels", tiny_corpus["labels"], "--features", tiny_corpus["features"],
                         "--norm-dir", norm, "--model-dir", str(tmp_path / "models"),
                         "--cache-dir", str(tmp_path / "cache")]
    assert cli(online_testing.main, argv) == 1
    command = (f".venv/bin/python norm_para.py --labels {tiny_corpus['labels']} --features "
               f"{tiny_corpus['features']} --norm-dir {norm}")
    missing = ", ".join(os.path.join(norm, f"{n}_norm_{s}.mat") for n in ("feat", "act") for s in ("means", "stds"))
    assert capsys.readouterr().err == (f"error: normalisation file(s) missing: {missing}. Compute them with "
                                       f"`{command}` (from the corpus's Train split; see README).\n")
    assert cli(norm_para.main, command.split()[2:]) == 0
    assert cli(online_testing.main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint not found: {tmp_path / 'models'}") and "NormTerm" not in err


def test_test_sh_says_why_tests_skipped(tmp_path):
    """test.sh's pytest command, run on a folder with one skipping test, prints the skip's
    reason (its environment set-up replaced by none: this virtual environment is used as it is)."""
    with open(os.path.join(ROOT, "test.sh")) as src, open(tmp_path / "test.sh", "w") as dst:
        dst.write(src.read())
    (tmp_path / "setup_env.sh").write_text("")
    os.symlink(sys.prefix, tmp_path / ".venv")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_skips.py").write_text(
        "import pytest\n\n\ndef test_on_a_gpu():\n    pytest.skip('no CUDA device here')\n")
    done = subprocess.run(["bash", str(tmp_path / "test.sh")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKIPPED [1] tests/test_skips.py:5: no CUDA device here" in done.stdout.splitlines()
