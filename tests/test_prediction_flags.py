"""prediction_process.py flags: -nc and -unlabel (one value or one per attribute), --window,
--hop and --plot, and --release (also in online_testing.py)."""
import argparse

import pytest

from deepemocluster import releases
from prediction_process import parse_args
from deepemocluster.model_flags import cluster_counts
from utils import UserError


def test_one_k_applies_to_all_three_models():
    assert cluster_counts("10") == [10, 10, 10]
    assert parse_args([]).num_clusters == [10, 10, 10]


def test_three_ks_are_act_dom_val():
    assert parse_args(["-nc", "30,30,10"]).num_clusters == [30, 30, 10]


@pytest.mark.parametrize("text, message", [("30,30", "one K or three"), ("1", "at least 2"),
                                           ("a,b,c", "must be an integer")])
def test_bad_cluster_counts_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        cluster_counts(text)


# --- -unlabel: one N or three -----------------------------------------------------------------------
def test_one_unlabel_size_applies_to_all_three_models():
    assert parse_args([]).unlabel_size == [0, 0, 0]
    assert parse_args(["-unlabel", "240"]).unlabel_size == [240, 240, 240]


def test_three_unlabel_sizes_are_act_dom_val():
    args = parse_args(["-nc", "30,30,10", "-unlabel", "100000,100000,15000", "-mt", "Temp-Trans"])
    assert args.unlabel_size == [100000, 100000, 15000] and args.num_clusters == [30, 30, 10]


@pytest.mark.parametrize("text, message", [("1,2", "one N or three"), ("-1", "at least 0"),
                                           ("x", "must be an integer")])
def test_bad_unlabel_sizes_are_refused(text, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["-unlabel", text])
    assert message in capsys.readouterr().err


def test_training_scripts_keep_a_single_unlabel_size():
    import main as train_script

    assert train_script.parse_args(["-unlabel", "240"]).unlabel_size == 240
    with pytest.raises(SystemExit):
        train_script.parse_args(["-unlabel", "1,2,3"])


# --- --window, --hop, --plot ---------------------------------------------------------------------------
def test_window_defaults_and_hop():
    args = parse_args([])
    assert args.window is None and args.hop is None and args.plot is None and args.embeddings is None
    assert parse_args(["--window", "11"]).hop == 11.0
    assert parse_args(["--window", "2", "--hop", "0.5"]).hop == 0.5
    assert parse_args(["--window", "0.992"]).window == 0.992


@pytest.mark.parametrize("argv, message", [
    (["--window", "0.5"], "--window must be at least one chunk (62 frames, 0.992 s), got 0.5"),
    (["--window", "0"], "--window must be a number of seconds greater than 0, got '0'"),
    (["--window", "-3"], "--window must be a number of seconds greater than 0"),
    (["--window", "ten"], "--window must be a number of seconds greater than 0, got 'ten'"),
    (["--window", "nan"], "--window must be a number of seconds greater than 0"),
    (["--window", "2", "--hop", "0"], "--hop must be a number of seconds greater than 0"),
    (["--hop", "1"], "--hop needs --window"),
    (["--plot", "plots"], "--plot needs --window"),
])
def test_bad_window_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        parse_args(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


# --- --release ---------------------------------------------------------------------------------------------
@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A fake fetched v1.8-ssl release (files of the right names) under a temporary released/."""
    import fetch_models

    root = tmp_path / "released"
    release = fetch_models.RELEASES["v1.8-ssl"]
    for path in release.files("Temp-Trans"):
        target = root / "v1.8-ssl" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    monkeypatch.setattr(releases, "RELEASED_DIR", str(root))
    return root


def test_release_sets_folders_epochs_batch_clusters_unlabel_and_type(installed):
    args = parse_args(["--release", "v1.8-ssl"])
    assert (args.epochs, args.batch_size, args.model_type) == (30, 64, "Temp-Trans")
    assert args.num_clusters == [30, 30, 10] and args.unlabel_size == [100000, 100000, 15000]
    assert args.model_dir == str(installed / "v1.8-ssl" / "trained_models")
    assert args.norm_dir == str(installed / "v1.8-ssl" / "NormTerm")
    # Flags that agree with the release are accepted.
    same = parse_args(["--release", "v1.8-ssl", "-mt", "Temp-Trans", "-nc", "30,30,10", "-ep", "30"])
    assert same.num_clusters == [30, 30, 10]


def test_online_testing_release_takes_the_attributes_k_and_n(installed):
    import online_testing

    act = online_testing.parse_args(["--release", "v1.8-ssl", "-emo", "Act"])
    val = online_testing.parse_args(["--release", "v1.8-ssl", "-emo", "Val"])
    assert (act.num_clusters, act.unlabel_size, act.model_type) == (30, 100000, "Temp-Trans")
    assert (val.num_clusters, val.unlabel_size) == (10, 15000)
    assert val.model_dir == str(installed / "v1.8-ssl" / "trained_models")
    plain = online_testing.parse_args([])
    assert (plain.num_clusters, plain.unlabel_size, plain.model_dir) == (10, 0, "./trained_models")
    with pytest.raises(UserError, match=r"-nc 30 contradicts --release v1.8-ssl, which sets -nc 10"):
        online_testing.parse_args(["--release", "v1.8-ssl", "-emo", "Val", "-nc", "30"])


@pytest.mark.parametrize("argv, message", [
    (["-mt", "Temp-GRU"], "-mt Temp-GRU contradicts --release v1.8-ssl, which sets -mt Temp-Trans"),
    (["--model-dir", "mine"], "--model-dir mine contradicts --release v1.8-ssl"),
    (["--norm-dir", "NormTerm"], "--norm-dir NormTerm contradicts --release v1.8-ssl"),
    (["-nc", "10"], "-nc 10,10,10 contradicts --release v1.8-ssl, which sets -nc 30,30,10"),
    (["-unlabel", "0"], "-unlabel 0,0,0 contradicts --release v1.8-ssl"),
    (["-ep", "10"], "-ep 10 contradicts --release v1.8-ssl, which sets -ep 30"),
])
def test_flags_that_contradict_the_release_are_refused(installed, argv, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        parse_args(["--release", "v1.8-ssl", *argv])


def test_a_release_not_fetched_says_how_to_fetch_it(tmp_path, monkeypatch, capsys):
    import fetch_models
    import online_testing
    import prediction_process
    from utils import run_cli

    monkeypatch.setattr(releases, "RELEASED_DIR", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="python fetch_models.py v1.8-ssl"):
        parse_args(["--release", "v1.8-ssl"])
    with pytest.raises(UserError, match="python fetch_models.py v1.8 -mt Temp-GRU"):
        parse_args(["--release", "v1.8", "-mt", "Temp-GRU"])
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: prediction_process.main(["--release", "v1.8-ssl", "--input", str(tmp_path)]))
    err = capsys.readouterr().err
    assert done.value.code == 1 and "is not installed" in err and err.count("\n") == 1
    # Both routes, each with the interpreter as the README names it.
    commit = fetch_models.RELEASES["v1.8-ssl"].commit
    assert ("Fetch it with: .venv/bin/python fetch_models.py v1.8-ssl; or, without network access "
            "to GitHub, install from a local copy of "
            f"{fetch_models.REPOSITORY_URL} at commit {commit} ") in err
    assert err.endswith(": .venv/bin/python fetch_models.py v1.8-ssl --from DIR\n")
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: online_testing.main(["--release", "v1.8", "-mt", "Temp-CNN", "-emo", "Dom"]))
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Fetch it with: .venv/bin/python fetch_models.py v1.8 -mt Temp-CNN; " in err
    assert f"at commit {fetch_models.RELEASES['v1.8'].commit} " in err
    assert err.endswith(": .venv/bin/python fetch_models.py v1.8 -mt Temp-CNN --from DIR\n")
    with pytest.raises(SystemExit):
        parse_args(["--release", "v9"])
    assert "invalid choice: 'v9'" in capsys.readouterr().err


def test_release_predicts_with_the_release_files(tmp_path, monkeypatch, capsys):
    """The checkpoint names the flags give are the release's file names (random weights here)."""
    import numpy as np
    import soundfile as sf

    import prediction_process
    from support.models import write_random_release

    write_random_release(tmp_path / "released", "v1.8-ssl")
    monkeypatch.setattr(releases, "RELEASED_DIR", str(tmp_path / "released"))
    audio = tmp_path / "in"
    audio.mkdir()
    t = np.arange(2 * 16000) / 16000
    sf.write(str(audio / "a.wav"), 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(3 * t)), 16000)
    out = tmp_path / "pred.csv"
    assert prediction_process.main(["--release", "v1.8-ssl", "--input", str(audio), "--output", str(out)]) == 0
    assert "with Temp-Trans models (release v1.8-ssl)" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "File_Name,Aro-Score,Dom-Score,Val-Score"
