"""deepemocluster/demo_models.py: the shipped demo models are named as such in the summary
line and the Predictor's table, and prediction warns once, naming --release and
fetch_models.py, when they predict audio from outside the demo corpus."""
import os

import pytest

import prediction_process
from support import ROOT
from support.audio import voice, write_audio
from deepemocluster import demo_models, model_flags, prediction_flags
from deepemocluster.predictor import Predictor
from support.prediction_setup import model_flags as random_model_flags
from utils import EMOTIONS, file_sha256, run_cli

SHIPPED = {"model_dir": os.path.join(ROOT, "trained_models"), "norm_dir": os.path.join(ROOT, "NormTerm"),
           "model_type": "Temp-Triplet", "epochs": 30, "batch_size": 64, "num_clusters": 10}
SHIPPED_FLAGS = ["--model-dir", SHIPPED["model_dir"], "--norm-dir", SHIPPED["norm_dir"], "-mt", "Temp-Triplet",
                 "-ep", "30", "-batch", "64", "-nc", "10"]


def command(argv):
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: prediction_process.main([str(a) for a in argv]))
    return done.value.code


def test_the_shipped_checkpoints_are_recognised_and_others_not(setup):
    args = prediction_flags.parse_args(SHIPPED_FLAGS)
    paths = [path for _, _, _, path in model_flags.attribute_checkpoints(args)]
    assert [file_sha256(p) for p in paths] == [demo_models.SHIPPED_DEMO_SHA256[e] for e in EMOTIONS]
    assert demo_models.are_demo_models(args, None)
    other = prediction_flags.parse_args([str(a) for a in random_model_flags(setup)])
    assert not demo_models.are_demo_models(other, None)


def test_the_command_names_the_demo_models_and_warns_once_outside_the_demo_corpus(tmp_path, monkeypatch, capsys):
    outside = tmp_path / "recordings"
    write_audio(str(outside / "a.wav"), voice(3.0, seed=1))
    write_audio(str(outside / "b.wav"), voice(3.5, seed=2))
    assert command(["--input", outside, "--output", tmp_path / "p.csv", *SHIPPED_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 file(s) predicted with Temp-Triplet models" in printed
    assert "the shipped demo models (trained on synthetic speech)" in printed
    warned = [line for line in printed.splitlines() if "demo corpus" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: 2 of 2 input(s) lie outside the demo corpus")
    assert "fetch_models.py v1.8-ssl" in warned[0] and "--release v1.8-ssl" in warned[0]
    # Audio of the demo corpus (./demo_corpus under the working folder): no warning.
    monkeypatch.chdir(tmp_path)
    write_audio(str(tmp_path / "demo_corpus" / "Predict" / "c.wav"), voice(3.0, seed=3))
    assert command(["--input", "demo_corpus/Predict", "--output", tmp_path / "q.csv", *SHIPPED_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "the shipped demo models" in printed and "demo corpus" not in printed


def test_other_models_get_no_warning(setup, tmp_path, capsys):
    write_audio(str(tmp_path / "in" / "a.wav"), voice(3.0, seed=1))
    assert command(["--input", tmp_path / "in", "--output", tmp_path / "p.csv", *random_model_flags(setup)]) == 0
    printed = capsys.readouterr().out
    assert "shipped demo" not in printed and "warning" not in printed


def test_the_predictor_names_them_and_warns_once(tmp_path):
    import warnings

    path = write_audio(str(tmp_path / "a.wav"), voice(3.0, seed=1))
    predictor = Predictor(**SHIPPED)
    assert "the shipped demo models (trained on synthetic speech)" in repr(predictor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = predictor.predict(path)
        again = predictor.predict(voice(2.0, seed=2), sample_rate=16000)
    assert table.attrs["models"] == again.attrs["models"] == repr(predictor)[len("Predictor("):-1]
    demo = [str(w.message) for w in caught if "demo corpus" in str(w.message)]
    assert len(demo) == 1 and "fetch_models.py" in demo[0] and "--release" in demo[0]
