"""End-to-end tests through the command lines: training (main.py), testing
(online_testing.py) and prediction (prediction_process.py) on the tiny corpus.

Training runs are shared between tests through module fixtures, so the whole
file trains ten tiny epochs (-batch 4, -nc 4, 16 Train turns).
"""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch

import main as train_main
import model as M
import online_testing
import prediction_process
from clustering import nmi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED = 7


def ckpt_name(ep, emo, mt):
    return f"TempDeepEmoCluster_epoch{ep}_batch4_4clusters_{emo}_{mt}.pth.tar"


def flags(corpus, model_dir, cache_dir, ep, emo, mt, precision=None, seed=SEED):
    args = ["-ep", str(ep), "-batch", "4", "-emo", emo, "-nc", "4", "-mt", mt,
            "--features", corpus["features"], "--labels", corpus["labels"],
            "--norm-dir", corpus["norm"], "--model-dir", str(model_dir),
            "--cache-dir", str(cache_dir), "--seed", str(seed)]
    if precision:
        args += ["--precision", precision]
    return args


@pytest.fixture(scope="module")
def work(tiny_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    return {"corpus": tiny_corpus, "base": base, "cache": base / "cache"}


@pytest.fixture(scope="module")
def gru_run(work):
    """main.py through a real subprocess: Temp-GRU, 2 epochs, fp32."""
    model_dir = work["base"] / "gru_a"
    cmd = [sys.executable, "main.py"] + flags(work["corpus"], model_dir, work["cache"], 2, "Act",
                                               "Temp-GRU", "fp32")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return {"dir": model_dir, "proc": proc, "args": cmd[2:]}


@pytest.fixture(scope="module")
def triplet_run(work):
    """main.main(argv) in this process: Temp-Triplet, 2 epochs, default precision."""
    model_dir = work["base"] / "triplet_ep2"
    assert train_main.main(flags(work["corpus"], model_dir, work["cache"], 2, "Act", "Temp-Triplet")) is None
    return {"dir": model_dir}


@pytest.fixture(scope="module")
def triplet_models(work):
    """Three Temp-Triplet models (Act, Dom, Val), 1 epoch each, default precision."""
    model_dir = work["base"] / "triplet_ep1"
    for emo in ("Act", "Dom", "Val"):
        train_main.main(flags(work["corpus"], model_dir, work["cache"], 1, emo, "Temp-Triplet"))
    return {"dir": model_dir}


def load_state(path):
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    return ckpt


def check_run_outputs(model_dir, mt):
    stem = model_dir / ckpt_name(2, "Act", mt)[:-len(".pth.tar")]
    ckpt_path = model_dir / ckpt_name(2, "Act", mt)
    assert ckpt_path.is_file()
    ckpt = load_state(ckpt_path)
    assert set(ckpt) == {"arch", "state_dict"}
    assert ckpt["arch"] == "vgg16"
    sd = ckpt["state_dict"]
    assert tuple(sd["top_layer_class.weight"].shape) == (4, 256)
    assert tuple(sd["cnn_features.module.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(sd["cnn_out.module.0.weight"].shape) == (256, 1024)
    has_temporal = any(k.startswith("temporal_net.") for k in sd)
    assert has_temporal == (mt != "Temp-Triplet")
    assert all(torch.isfinite(v.float()).all() for v in sd.values())

    log = np.load(str(stem) + "_clusters.npy", allow_pickle=False)
    assert log.shape == (2, 16 * 11)
    assert np.issubdtype(log.dtype, np.integer)
    assert log.min() >= 0 and log.max() <= 3

    with open(str(stem) + "_history.json") as f:
        history = json.load(f)
    for key in ("train_loss", "val_loss", "nmi"):
        assert len(history[key]) == 2, key
    assert history["nmi"][0] is None
    assert 0.0 <= history["nmi"][1] <= 1.0
    # The recorded NMI is that of the two logged assignments.
    assert history["nmi"][1] == pytest.approx(nmi(log[0], log[1]), abs=1e-9)
    assert all(np.isfinite(history["train_loss"])) and all(np.isfinite(history["val_loss"]))

    for suffix in ("_NMI_ValLoss.png", "_TrainLoss.png"):
        with open(str(stem) + suffix, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, suffix

    # The checkpoint is that of the best epoch: the last one when the validation
    # loss improved at epoch 2, the first otherwise. The resume file holds the last.
    last = load_state(str(stem) + "_resume.pth.tar")["state_dict"]
    same_as_last = all(torch.equal(sd[k], last[k]) for k in sd)
    assert same_as_last == (history["val_loss"][1] < history["val_loss"][0])
    return sd


def test_main_gru_exit_code_and_outputs(gru_run):
    proc = gru_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 2/2" in proc.stdout
    check_run_outputs(gru_run["dir"], "Temp-GRU")


def test_main_triplet_outputs(triplet_run):
    check_run_outputs(triplet_run["dir"], "Temp-Triplet")


def assert_same_state(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_same_seed_fp32_is_bit_identical(work, gru_run):
    """A second fp32 Temp-GRU run (in this process) equals the subprocess run bit for bit."""
    assert gru_run["proc"].returncode == 0
    again = work["base"] / "gru_b"
    train_main.main(flags(work["corpus"], again, work["cache"], 2, "Act", "Temp-GRU", "fp32"))
    name = ckpt_name(2, "Act", "Temp-GRU")
    assert_same_state(load_state(gru_run["dir"] / name)["state_dict"], load_state(again / name)["state_dict"])
    stem = name[:-len(".pth.tar")]
    np.testing.assert_array_equal(np.load(gru_run["dir"] / (stem + "_clusters.npy")),
                                  np.load(again / (stem + "_clusters.npy")))


def test_same_seed_default_precision_is_bit_identical(work, triplet_models):
    again = work["base"] / "triplet_ep1_again"
    train_main.main(flags(work["corpus"], again, work["cache"], 1, "Act", "Temp-Triplet"))
    name = ckpt_name(1, "Act", "Temp-Triplet")
    assert_same_state(load_state(triplet_models["dir"] / name)["state_dict"],
                      load_state(again / name)["state_dict"])


# --- test (method §7) ---------------------------------------------------------------------------
def normalised_chunks(feat_path, mean, std):
    """method §3 and §4 by hand: (x − mean)/std, NaN → 0, clip ±3, 11 chunks of 62 frames."""
    x = scipy.io.loadmat(feat_path)["Audio_data"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (x - mean) / std
    x[np.isnan(x)] = 0
    x = np.clip(x, -3, 3)
    assert x.shape[0] >= 62
    step = (x.shape[0] - 62) // 10
    return np.stack([x[i * step:i * step + 62] for i in range(11)]).astype(np.float32)


def norm_value(corpus, name):
    return scipy.io.loadmat(os.path.join(corpus["norm"], name))["normal_para"].reshape(-1)


def hand_predictions(ckpt_path, mt, corpus, stems, feat_dir, emo):
    state = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)["state_dict"]
    net = M.build_model(mt, 4)
    net.load_state_dict(M.canonical_state_dict(state))
    net.eval()
    mean = norm_value(corpus, "feat_norm_means.mat")
    std = norm_value(corpus, "feat_norm_stds.mat")
    x = torch.from_numpy(np.stack([normalised_chunks(os.path.join(feat_dir, s + ".mat"), mean, std)
                                   for s in stems]))
    with torch.no_grad():
        _, attri, _ = net(x)
    pred = attri.mean(dim=1).double().numpy()
    e = emo.lower()
    return pred * norm_value(corpus, f"{e}_norm_stds.mat")[0] + norm_value(corpus, f"{e}_norm_means.mat")[0]


def test_online_testing_prints_hand_computed_ccc(work, gru_run, capsys):
    assert gru_run["proc"].returncode == 0
    corpus = work["corpus"]
    capsys.readouterr()
    online_testing.main(gru_run["args"])
    out = capsys.readouterr().out
    match = re.search(r"Test1 CCC \((\d+) turns\): (-?\d+\.\d+)", out)
    assert match, out
    assert int(match.group(1)) == 6
    printed = float(match.group(2))

    with open(corpus["labels"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Split_Set"] == "Test1"]
    stems = [r["FileName"][:-4] for r in rows]
    y = np.array([float(r["EmoAct"]) for r in rows])
    pred = hand_predictions(gru_run["dir"] / ckpt_name(2, "Act", "Temp-GRU"), "Temp-GRU", corpus,
                            stems, corpus["features"], "Act")
    mx, my = pred.mean(), y.mean()
    ccc = 2 * np.mean((pred - mx) * (y - my)) / (pred.var() + y.var() + (mx - my) ** 2)
    assert printed == pytest.approx(ccc, abs=6e-5)


# --- prediction (method §7) -----------------------------------------------------------------------
def test_prediction_process_writes_csv(work, triplet_models, tmp_path):
    corpus = work["corpus"]
    out = tmp_path / "pred_result.csv"
    code = prediction_process.main([
        "--input", corpus["audio"], "--output", str(out), "-ep", "1", "-batch", "4", "-nc", "4",
        "-mt", "Temp-Triplet", "--model-dir", str(triplet_models["dir"]), "--norm-dir", corpus["norm"],
        "--precision", "fp32"])
    assert code == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["File_Name", "Aro-Score", "Dom-Score", "Val-Score"]
    wavs = sorted(n for n in os.listdir(corpus["audio"]) if n.endswith(".wav"))
    assert len(wavs) == 28
    assert [r[0] for r in rows[1:]] == wavs
    scores = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert scores.shape == (28, 3) and np.isfinite(scores).all()
    assert not os.path.exists(tmp_path / "pred_result_errors.csv")

    # Two files by hand: the features made by feat_extract equal those made here,
    # and each column comes from its attribute's model.
    stems = [w[:-4] for w in wavs[:2]]
    for col, emo in enumerate(("Act", "Dom", "Val")):
        pred = hand_predictions(triplet_models["dir"] / ckpt_name(1, emo, "Temp-Triplet"), "Temp-Triplet",
                                corpus, stems, corpus["features"], emo)
        np.testing.assert_allclose(scores[:2, col], pred, rtol=1e-4, atol=1e-4)
