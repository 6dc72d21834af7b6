"""ONNX export (export_onnx.py) and prediction with ONNX Runtime (prediction_process.py --onnx):
every temporal type, the semi-supervised release layout and the shipped demo models give
PyTorch's fp32 predictions through ONNX Runtime's CPU provider; the deployment example of docs/prediction.md
runs without torch."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from support import ROOT
from support.cli import cli
from support.files import read_csv
from support.onnx_export import EMBEDDING_TOL, SCORE_TOL, SHIPPED, models_in
from deepemocluster import releases  # noqa: E402

import export_onnx  # noqa: E402
import fetch_models  # noqa: E402
from deepemocluster import onnx_runner  # noqa: E402
import prediction_process  # noqa: E402
from deepemocluster import prediction  # noqa: E402
from deepemocluster.compute import Settings  # noqa: E402
from deepemocluster.features import load_norm_term  # noqa: E402
from model import ARCH, build_model, load_model, prepare_for_inference, released_state_dict  # noqa: E402
from support.docs import deployment_examples  # noqa: E402
from utils import EMOTIONS, NORM_VAR, TEMPORAL_TYPES, save_mat, save_torch  # noqa: E402

# Short turns (padded, and the 53–61-frame whole-turn rule), one chunk, and longer turns.
FRAMES = (20, 52, 53, 57, 61, 62, 63, 100, 1000)
RELEASE_OF = {"Temp-GRU": "v1.8", "Temp-CNN": "v1.8", "Temp-Triplet": "v1.8", "Temp-Trans": "v1.8-ssl"}


# --- models, NormTerm and turns ---------------------------------------------------------------------
@torch.no_grad()
def randomise(model, seed):
    """Random weights of a trained model's size, and BatchNorm statistics of its own
    activations on random input (so that no layer is all zero after its ReLU): outputs, and
    so their differences, are not vanishingly small."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=g) * np.sqrt(2.0 / p[0].numel()))
        elif name.endswith("weight"):
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None                     # running statistics: the mean over the batches
    model.train()
    model(torch.randn(1, 11, 62, 128, generator=g).clamp(-3, 3))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def write_norm_term(folder, seed=0):
    """A NormTerm whose band 5 has zero std (normalised to ±inf or NaN, then 0 or ±3)."""
    rng = np.random.default_rng(seed)
    mean = np.exp(rng.normal(-3, 1, 128))
    std = mean * rng.uniform(0.5, 2, 128)
    std[5] = 0.0
    save_mat(os.path.join(folder, "feat_norm_means.mat"), NORM_VAR, mean[None])
    save_mat(os.path.join(folder, "feat_norm_stds.mat"), NORM_VAR, std[None])
    for emo, (m, s) in zip(EMOTIONS, ((3.9, 0.8), (4.1, 0.7), (4.3, 1.1))):
        save_mat(os.path.join(folder, f"{emo.lower()}_norm_means.mat"), NORM_VAR, np.array([[m]]))
        save_mat(os.path.join(folder, f"{emo.lower()}_norm_stds.mat"), NORM_VAR, np.array([[s]]))


def turns(norm, seed=0, frames=FRAMES):
    """Raw mel spectrograms of every length in `frames`, around the NormTerm's mean; the
    100-frame one holds a NaN, +inf and -inf, and band 5 sometimes equals its mean."""
    rng = np.random.default_rng(seed)
    out = []
    for t in frames:
        mel = norm["features"].mean * np.exp(rng.normal(0, 1, (t, 128)))
        mel[::3, 5] = norm["features"].mean[5]
        if t == 100:
            mel[10, 7], mel[20, 8], mel[30, 9] = np.nan, np.inf, -np.inf
        out.append(mel.astype(np.float32))
    return out


def pytorch_fp32(model_dir, norm_dir, temporal_type, clusters, names):
    """prediction_process's PyTorch runner under --precision fp32 (the original numerics)."""
    models = [prepare_for_inference(load_model(os.path.join(model_dir, name), temporal_type, k),
                                    torch.device("cpu"), fast=False) for name, k in zip(names, clusters)]
    return prediction.TorchModels(models, load_norm_term(norm_dir), Settings(torch.device("cpu")))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Random-weight models of all four types in the authors' released layout (v1.8 for three
    types, the semi-supervised v1.8-ssl for Temp-Trans), each release with its NormTerm."""
    root = tmp_path_factory.mktemp("released")
    for i, mt in enumerate(TEMPORAL_TYPES):
        release = fetch_models.RELEASES[RELEASE_OF[mt]]
        base = root / release.name
        for j, emo in enumerate(EMOTIONS):
            model = randomise(build_model(mt, release.clusters[emo]), seed=10 * i + j)
            save_torch(str(base / release.model_path(emo, mt)),
                       {"arch": ARCH, "state_dict": released_state_dict(model)})
        write_norm_term(str(base / "NormTerm"), seed=i)
    return root


def onnx_predictions(folder, feats):
    return onnx_runner.OnnxModels(str(folder), threads=1).predict(feats, embeddings=True)


def assert_equal_predictions(got, expected):
    (scores, vectors), (ref_scores, ref_vectors) = got, expected
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(vectors, ref_vectors, rtol=0, atol=EMBEDDING_TOL)
    assert np.ptp(ref_scores, axis=1).min() > 0.05          # the turns' scores differ: a real test
    assert np.abs(ref_vectors).max() > 0.1


# --- 1–3: export, and ONNX Runtime equal to PyTorch fp32 --------------------------------------------
@pytest.mark.parametrize("temporal_type", TEMPORAL_TYPES)
def test_every_type_exports_and_equals_pytorch_fp32(temporal_type, released, tmp_path, monkeypatch):
    monkeypatch.setattr(releases, "RELEASED_DIR", str(released))
    release = fetch_models.RELEASES[RELEASE_OF[temporal_type]]
    out = tmp_path / "onnx"
    assert export_onnx.main(["--release", release.name, "-mt", temporal_type, "--output", str(out)]) == 0
    checkpoints = [os.path.basename(release.model_path(emo, temporal_type)) for emo in EMOTIONS]
    names = [c.removesuffix(".pth.tar") + ".onnx" for c in checkpoints]
    assert sorted(os.listdir(out)) == sorted(names + [onnx_runner.WAVEFORM_FILE])
    assert names[0].endswith(f"_Act_{temporal_type}" + ("_unlabel100000.onnx" if release.name == "v1.8-ssl"
                                                          else ".onnx"))
    for emo, name, checkpoint in zip(EMOTIONS, names, checkpoints):
        proto = onnx.load(str(out / name))
        onnx.checker.check_model(proto, full_check=True)
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [onnx_runner.OPSET]
        meta = {p.key: p.value for p in proto.metadata_props}
        assert (meta["attribute"], meta["temporal_type"], meta["clusters"], meta["unlabelled_turns"]) == (
            emo, temporal_type, str(release.clusters[emo]), str(release.unlabel[emo]))
        assert (meta["release"], meta["release_commit"]) == (release.name, release.commit)
        assert meta["licence"] == fetch_models.LICENCE and "MIT" in meta["licence"]
        assert "Speech Communication 157 (2024) 103027" in meta["citation"]
        assert meta["checkpoint"] == checkpoint
        with open(released / release.name / release.model_path(emo, temporal_type), "rb") as f:
            assert meta["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
        assert {k: meta[k] for k in onnx_runner.FEATURE_SETTINGS} == onnx_runner.FEATURE_SETTINGS
        assert "128 Slaney-scale bands" in meta["mel_filters"] and "no log" in meta["mel_values"]
    base = released / release.name
    reference = pytorch_fp32(str(base / "trained_models"), str(base / "NormTerm"), temporal_type,
                             [release.clusters[e] for e in EMOTIONS], checkpoints)
    feats = turns(reference.norm, seed=len(temporal_type))
    assert_equal_predictions(onnx_predictions(out, feats), reference.predict(feats, embeddings=True))


def test_shipped_models_equal_pytorch_fp32_and_name_their_training_run(shipped_onnx):
    names = models_in(shipped_onnx)
    assert names == [f"TempDeepEmoCluster_epoch30_batch64_10clusters_{e}_Temp-Triplet.onnx" for e in EMOTIONS]
    assert sorted(os.listdir(shipped_onnx)) == sorted(names + [onnx_runner.WAVEFORM_FILE])
    checkpoints = [n.replace(".onnx", ".pth.tar") for n in names]
    for name, checkpoint in zip(names, checkpoints):
        meta = {p.key: p.value for p in onnx.load(str(shipped_onnx / name)).metadata_props}
        assert "release" not in meta and meta["source"] == "a training run of this repository (main.py)"
        with open(os.path.join(ROOT, "trained_models", checkpoint), "rb") as f:
            assert meta["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    reference = pytorch_fp32(os.path.join(ROOT, "trained_models"), os.path.join(ROOT, "NormTerm"),
                             "Temp-Triplet", [10] * 3, checkpoints)
    feats = turns(reference.norm, frames=(20, 57, 62, 100, 1000))   # every length: the test above
    assert_equal_predictions(onnx_predictions(shipped_onnx, feats), reference.predict(feats, embeddings=True))


def test_export_takes_predictions_model_flags():
    args = export_onnx.parse_args(["-mt", "Temp-Trans", "-nc", "30,30,10", "-unlabel", "100000,100000,15000",
                                   "--output", "x"])
    assert (args.num_clusters, args.unlabel_size, args.output) == ([30, 30, 10], [100000, 100000, 15000], "x")
    assert not hasattr(args, "device") and not hasattr(args, "precision")


@pytest.mark.parametrize("case, message", [
    ("checkpoint", "checkpoint not found: "),
    ("norm", "normalisation file(s) missing: "),
    ("output", "cannot write to --output "),
])
def test_export_errors_are_one_line(case, message, tmp_path, capsys):
    argv = [*SHIPPED, "--output", str(tmp_path / "onnx")]
    if case == "checkpoint":
        argv[argv.index("-nc") + 1] = "11"
    elif case == "norm":
        argv[argv.index("--norm-dir") + 1] = str(tmp_path / "no_norm")
    else:
        (tmp_path / "a_file").write_text("")
        argv[-1] = str(tmp_path / "a_file" / "onnx")
    assert cli(export_onnx.main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: " + message) and err.count("\n") == 1
    assert not (tmp_path / "onnx").exists() or not os.listdir(tmp_path / "onnx")


# --- 4: prediction_process.py --onnx -------------------------------------------------------------------
def predict_with(how, recordings, shipped_onnx, out, *extra):
    """prediction_process in PyTorch as a user runs it ("torch": the default fast path, equal to
    fp32 to float rounding) or with --onnx: (exit status, the warnings' messages); its CSV is
    out/pred.csv."""
    flags = SHIPPED if how == "torch" else ["--onnx", shipped_onnx]
    argv = ["--input", recordings, "--output", out / "pred.csv", *flags, *extra]
    with pytest.warns(UserWarning) as warned:
        code = cli(prediction_process.main, [str(a).replace("OUT", str(out)) for a in argv])
    return code, [str(w.message) for w in warned]


@pytest.fixture(scope="module")
def torch_run(recordings, shipped_onnx, tmp_path_factory):
    """The recordings predicted in PyTorch with --embeddings: (status, warnings, folder)."""
    out = tmp_path_factory.mktemp("torch_run")
    return (*predict_with("torch", recordings, shipped_onnx, out, "--embeddings", "OUT/emb"), out)


def test_onnx_prediction_gives_pytorchs_csv_embeddings_and_errors(recordings, shipped_onnx, torch_run,
                                                                  tmp_path, capsys):
    code_t, warn_t, out_t = torch_run
    out_o = tmp_path
    code_o, warn_o = predict_with("onnx", recordings, shipped_onnx, out_o, "--embeddings", "OUT/emb")
    assert code_t == code_o == 1                                  # broken.wav is listed, not fatal
    assert warn_o == warn_t and any("padded with zeros" in w and "r0.wav" in w for w in warn_o)
    printed = capsys.readouterr().out
    assert f"4 of 5 file(s) predicted with Temp-Triplet models ({shipped_onnx}, ONNX Runtime)" in printed
    torch_rows, onnx_rows = read_csv(out_t / "pred.csv"), read_csv(out_o / "pred.csv")
    assert [r[0] for r in onnx_rows] == [r[0] for r in torch_rows] == [
        "File_Name", "r0.wav", "r1.wav", "r2.wav", "r3.wav"]
    np.testing.assert_allclose(np.array([r[1:] for r in onnx_rows[1:]], float),
                               np.array([r[1:] for r in torch_rows[1:]], float), rtol=0, atol=SCORE_TOL)
    assert read_csv(out_o / "pred_errors.csv") == read_csv(out_t / "pred_errors.csv")
    assert read_csv(out_o / "pred_errors.csv")[1][0] == "broken.wav"
    assert read_csv(out_o / "emb" / "index.csv") == read_csv(out_t / "emb" / "index.csv")
    for emo in EMOTIONS:
        got, expected = (np.load(out / "emb" / f"embeddings_{emo}.npy") for out in (out_o, out_t))
        assert got.shape == expected.shape == (4, 256)
        np.testing.assert_allclose(got, expected, rtol=0, atol=EMBEDDING_TOL)


def test_onnx_prediction_over_windows_with_plots(recordings, shipped_onnx, tmp_path):
    code_t, _ = predict_with("torch", recordings, shipped_onnx, tmp_path / "torch", "--window", "3")
    code_o, _ = predict_with("onnx", recordings, shipped_onnx, tmp_path / "onnx", "--window", "3",
                             "--plot", "OUT/plots")
    assert code_t == code_o == 1
    torch_rows, onnx_rows = (read_csv(tmp_path / how / "pred.csv") for how in ("torch", "onnx"))
    assert onnx_rows[0] == ["File_Name", "Start", "End", "Aro-Score", "Dom-Score", "Val-Score"]
    assert [r[:3] for r in onnx_rows] == [r[:3] for r in torch_rows] and len(onnx_rows) == 1 + 3 + 3
    np.testing.assert_allclose(np.array([r[3:] for r in onnx_rows[1:]], float),
                               np.array([r[3:] for r in torch_rows[1:]], float), rtol=0, atol=SCORE_TOL)
    assert sorted(os.listdir(tmp_path / "onnx" / "plots")) == [f"r{i}.wav.png" for i in range(4)]


def test_predictor_with_onnx_gives_the_onnx_csv(recordings, shipped_onnx, tmp_path):
    """Predictor(onnx=DIR): the rows of prediction_process.py --onnx DIR exactly (the same
    ONNX sessions on the same turns), broken.wav left out with a warning; the label mean and std
    the files de-normalise with (for --plot's axis) are the NormTerm's they were exported with."""
    from deepemocluster.predictor import Predictor

    predict_with("onnx", recordings, shipped_onnx, tmp_path)
    rows = [[r[0]] + [float(v) for v in r[1:]] for r in read_csv(tmp_path / "pred.csv")[1:]]
    predictor = Predictor(onnx=str(shipped_onnx))
    with pytest.warns(UserWarning, match="1 of 5 input"):
        table = predictor.predict(str(recordings), skip_errors=True)
    assert [list(r) for r in table.itertuples(index=False)] == rows
    norm = load_norm_term(os.path.join(ROOT, "NormTerm"))
    assert predictor.runner.norm == {k: v for k, v in norm.items() if not k.startswith("feat")}


def onnx_dir_error(folder, recordings, tmp_path, capsys):
    assert cli(prediction_process.main, ["--input", recordings, "--output", tmp_path / "p.csv",
                                         "--onnx", folder]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "p.csv").exists()
    return err


def test_onnx_folders_that_are_not_one_set_are_refused(recordings, shipped_onnx, tmp_path, capsys):
    act, dom, val = models_in(shipped_onnx)
    two = tmp_path / "two"
    two.mkdir()
    for name in (act, dom):
        shutil.copy(shipped_onnx / name, two / name)
    assert f"has no Val model (found: {act}, {dom})" in onnx_dir_error(two, recordings, tmp_path, capsys)

    proto = onnx.load(str(shipped_onnx / val))                    # a Val model of another type
    for p in proto.metadata_props:
        if p.key == "temporal_type":
            p.value = "Temp-GRU"
    onnx.save(proto, str(two / "other_Val.onnx"))
    err = onnx_dir_error(two, recordings, tmp_path, capsys)
    assert "disagree on temporal_type" in err and "other_Val.onnx: 'Temp-GRU'" in err

    shutil.copy(shipped_onnx / val, two / val)
    assert "has 2 Val models" in onnx_dir_error(two, recordings, tmp_path, capsys)
    os.remove(two / "other_Val.onnx")
    (two / "damaged.onnx").write_bytes(b"not a model")
    assert "cannot load " in onnx_dir_error(two, recordings, tmp_path, capsys)
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(foreign, str(two / "damaged.onnx"))
    assert "was not written by export_onnx.py" in onnx_dir_error(two, recordings, tmp_path, capsys)
    assert "no such folder" in onnx_dir_error(tmp_path / "none", recordings, tmp_path, capsys)


def test_onnx_refuses_model_flags(tmp_path, capsys):
    for extra, message in ((["-mt", "Temp-GRU"], "leave out -mt"), (["--device", "cuda"], "--device")):
        with pytest.raises(SystemExit) as done:
            prediction_process.parse_args(["--onnx", str(tmp_path), *extra])
        assert done.value.code == 2 and message in capsys.readouterr().err


# --- the deployment example of docs/prediction.md ------------------------------------------------------
def test_docs_example_predicts_a_wav_without_torch(recordings, shipped_onnx, torch_run):
    code = deployment_examples()[0]
    assert "import torch" not in code and "onnxruntime" in code
    code = re.sub(r'MODELS = ".*"', f'MODELS = "{shipped_onnx}"', code)
    code = re.sub(r'WAV = ".*"', f'WAV = "{recordings / "r2.wav"}"', code)
    code += "\nimport sys\nassert 'torch' not in sys.modules, 'the example imported torch'\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line.split() for line in done.stdout.splitlines()]
    assert [p[0] for p in printed] == list(EMOTIONS) and all(p[2:] == ["(256,)"] for p in printed)
    row = next(r for r in read_csv(torch_run[2] / "pred.csv") if r[0] == "r2.wav")
    np.testing.assert_allclose([float(p[1]) for p in printed], [float(v) for v in row[1:]],
                               rtol=0, atol=SCORE_TOL)
