"""A newcomer's first hour: finished models are never replaced without being asked,
outputs are readable like ordinary files, and the training plots explain themselves."""
import os
import stat

import numpy as np
import pytest
import soundfile as sf

import feat_extract
import main as train_main
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
    run = type("Run", (), {"nmi_val_plot": "a.png", "train_plot": "b.png"})()
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
