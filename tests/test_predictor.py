"""deepemocluster/predictor.py: predictions from Python equal prediction_process.py's CSV (and embeddings),
for files, folders, arrays and windows; bad settings and inputs are UserErrors; docs/prediction.md's
"From Python" snippet runs as written.

Exactly equal where the Predictor is given what the script predicts (the folder's files, in
its walk order): the same code runs on the same blocks and batches, so the same float
operations give the same float32 model outputs, and the CSV's floats (Python's repr) read
back to the same float64. A file predicted alone shares its batch with no other file, which
may change the rounding of the batched convolutions: compared to float rounding (1e-5).
"""
import csv
import dataclasses
import os
import re
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import prediction_process
from deepemocluster import prediction, releases  # noqa: E402
from deepemocluster.predictor import Predictor
from support.audio import SR, voice, write_audio
from support.models import save_models, write_norm_term, write_random_release
from deepemocluster.features import extract_features
from support.docs import code_blocks, section
from utils import EMOTIONS, UserError, run_cli

SETTINGS = {"model_type": "Temp-Triplet", "epochs": 1, "batch_size": 4, "num_clusters": 4}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained Temp-Triplet models (K = 4), a NormTerm, and a folder of three recordings."""
    root = tmp_path_factory.mktemp("predictor")
    model_dir, norm_dir = str(root / "models"), str(root / "NormTerm")
    save_models(model_dir, "Temp-Triplet", [4] * 3, [0] * 3)
    write_norm_term(norm_dir, np.concatenate([extract_features(write_audio(str(root / "n" / f"{i}.wav"),
                                                                           voice(3.0, seed=i)))
                                              for i in range(2)]))
    audio = root / "audio"
    write_audio(str(audio / "a.wav"), voice(3.0, seed=5))
    write_audio(str(audio / "sub" / "b.flac"), voice(4.0, rate=22050, channels=2, seed=6), 22050,
                subtype="PCM_16")
    write_audio(str(audio / "c.wav"), voice(6.5, seed=7))
    flags = ["--model-dir", model_dir, "--norm-dir", norm_dir, "-mt", "Temp-Triplet", "-ep", "1",
             "-batch", "4", "-nc", "4"]
    return {"root": root, "audio": audio, "flags": flags,
            "predictor": Predictor(model_dir=model_dir, norm_dir=norm_dir, **SETTINGS)}


def script_csv(models, output, *extra):
    """prediction_process.py on the audio folder: the CSV's rows (floats parsed back)."""
    argv = ["--input", str(models["audio"]), "--output", str(output), *models["flags"], *extra]
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: prediction_process.main([str(a) for a in argv]))
    assert done.value.code == 0
    with open(output, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[r[0]] + [float(v) for v in r[1:]] for r in rows[1:]]


def as_rows(table):
    return [list(row) for row in table.itertuples(index=False)]


def test_files_folders_and_arrays_give_the_csv_numbers(models, tmp_path):
    header, expected = script_csv(models, tmp_path / "pred.csv")
    predictor = models["predictor"]
    walked = [str(models["audio"] / name) for name in ("a.wav", "c.wav", os.path.join("sub", "b.flac"))]
    by_list = predictor.predict(walked)
    assert list(by_list.columns) == header == ["File_Name", "Aro-Score", "Dom-Score", "Val-Score"]
    assert as_rows(by_list) == expected                          # exactly: the same batches
    assert as_rows(predictor.predict(models["audio"])) == expected
    # One file alone, and the same file's samples as an array (stereo, 22.05 kHz, float64 as read).
    alone = predictor.predict(walked[2])
    assert alone["File_Name"].tolist() == ["b.flac"]
    np.testing.assert_allclose(as_rows(alone)[0][1:], expected[2][1:], rtol=0, atol=1e-5)
    samples, rate = sf.read(walked[2])
    assert samples.shape == (4 * 22050, 2) and samples.dtype == np.float64 and rate == 22050
    array = predictor.predict(samples, sample_rate=rate, name="b.flac")
    assert as_rows(array) == as_rows(alone)                     # exactly: the file's own samples


def test_windows_and_embeddings_equal_the_scripts(models, tmp_path, capsys):
    emb = tmp_path / "emb"
    capsys.readouterr()
    header, expected = script_csv(models, tmp_path / "win.csv", "--window", "2", "--hop", "1.5",
                                  "--embeddings", emb)
    walked = [str(models["audio"] / name) for name in ("a.wav", "c.wav", os.path.join("sub", "b.flac"))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, vectors = models["predictor"].predict(walked, window=2, hop=1.5, embeddings=True)
    assert list(table.columns) == header == ["File_Name", "Start", "End", "Aro-Score", "Dom-Score",
                                             "Val-Score"]
    assert as_rows(table) == expected
    assert sorted(vectors) == list(EMOTIONS)
    for emo in EMOTIONS:
        saved = np.load(emb / f"embeddings_{emo}.npy")
        assert vectors[emo].dtype == np.float32 and vectors[emo].shape == (len(table), 256)
        assert np.array_equal(vectors[emo], saved)
    # Windows shorter than a training turn: the script's warning line, as a Python warning.
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    assert [str(w.message) for w in caught] == [line.removeprefix("warning: ") for line in printed]
    assert len(printed) == 1 and "window(s) shorter than 2.75 s" in printed[0]
    # An array in windows: the file's windows.
    samples, rate = sf.read(walked[1], dtype="float32")
    again = models["predictor"].predict(samples, sample_rate=rate, window=2, hop=1.5, name="c.wav")
    assert as_rows(again) == [r for r in expected if r[0] == "c.wav"]


def test_bad_settings_and_inputs_are_user_errors(models, tmp_path):
    with pytest.raises(UserError, match=re.escape("argument -mt/--model_type: invalid choice: 'Temp-X'")):
        Predictor(model_type="Temp-X")
    with pytest.raises(UserError, match=re.escape("-nc takes one K or three (Act,Dom,Val), got '4,4'")):
        Predictor(num_clusters=(4, 4))
    with pytest.raises(TypeError, match="unknown setting.*clusters"):
        Predictor(clusters=4)
    with pytest.raises(UserError, match="checkpoint"):
        Predictor(model_dir=str(tmp_path / "none"), norm_dir=models["flags"][3], **SETTINGS)
    predictor = models["predictor"]
    with pytest.raises(UserError, match=re.escape("--window must be at least one chunk (62 frames, 0.992 s), got 0.5")):
        predictor.predict(str(models["audio"] / "a.wav"), window=0.5)
    with pytest.raises(UserError, match="needs its sample_rate"):
        predictor.predict(np.zeros(16000))
    with pytest.raises(UserError, match=re.escape("must be (n,) or (n, channels) and not empty, got shape (2, 3, 4)")):
        predictor.predict(np.zeros((2, 3, 4)), sample_rate=SR)
    with pytest.raises(UserError, match=re.escape(f"1 audio file(s) not found: {tmp_path / 'x.wav'}")):
        predictor.predict([str(models["audio"] / "a.wav"), str(tmp_path / "x.wav")])
    silent = write_audio(str(tmp_path / "silent.wav"), np.zeros(3 * SR, np.float32))
    files = [str(models["audio"] / "a.wav"), silent]
    with pytest.raises(UserError, match=re.escape("1 of 2 input(s) could not be predicted: silent.wav: "
                                                  "silent audio (peak amplitude is 0)")):
        predictor.predict(files)
    with pytest.warns(UserWarning, match="1 of 2 input"):
        table = predictor.predict(files, skip_errors=True)
    assert table["File_Name"].tolist() == ["a.wav"]


def tf32_and_autotuning():
    """torch's process-wide flags prediction_process.py sets on a GPU (the new API's strings:
    readable whichever API set them)."""
    b = torch.backends
    return {"cudnn.benchmark": b.cudnn.benchmark, "cudnn.conv": b.cudnn.conv.fp32_precision,
            "cudnn.rnn": b.cudnn.rnn.fp32_precision, "cuda.matmul": b.cuda.matmul.fp32_precision}


@pytest.fixture
def users_flags():
    """A user's own flags: no cuDNN autotuning, TF32 in cuDNN (torch's default) and in cuBLAS
    (set_float32_matmul_precision("high"), as torch's documentation suggests); torch's defaults
    back after the test."""
    b = torch.backends
    saved = (b.cudnn.benchmark, b.cudnn.allow_tf32, torch.get_float32_matmul_precision(),
             b.cuda.matmul.fp32_precision)
    b.cudnn.benchmark, b.cudnn.allow_tf32 = False, True
    torch.set_float32_matmul_precision("high")
    yield tf32_and_autotuning()
    b.cudnn.benchmark, b.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])
    b.cuda.matmul.fp32_precision = saved[3]


def test_the_process_backend_flags_are_left_as_the_predictor_found_them(models, users_flags, monkeypatch):
    """On a GPU, prediction_process.py's flags (no TF32, cuDNN autotuning) hold while a Predictor
    loads and predicts, and the process's own are back once it returns: it runs in its user's
    process. The CPU build plays the GPU: the models load and predict on the CPU, under a
    runner for cuda:0."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    load = prediction.load_attribute_models
    monkeypatch.setattr(prediction, "load_attribute_models",
                        lambda args, settings: load(args, dataclasses.replace(settings, device=cpu)))
    predictor = Predictor(model_dir=str(models["root"] / "models"), norm_dir=str(models["root"] / "NormTerm"),
                          device="cuda:0", **SETTINGS)
    assert predictor.runner.settings.device == gpu
    assert tf32_and_autotuning() == users_flags
    during, predict_folder = [], prediction.predict_folder

    def on_the_cpu(items, runner, *args, **kwargs):
        during.append(tf32_and_autotuning())
        return predict_folder(items, runner._replace(settings=dataclasses.replace(runner.settings, device=cpu)),
                              *args, **kwargs)

    monkeypatch.setattr(prediction, "predict_folder", on_the_cpu)
    table = predictor.predict(str(models["audio"] / "a.wav"))
    assert table["File_Name"].tolist() == ["a.wav"]
    assert during == [{"cudnn.benchmark": True, "cudnn.conv": "none", "cudnn.rnn": "none", "cuda.matmul": "ieee"}]
    assert tf32_and_autotuning() == users_flags


def test_the_docs_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/prediction.md's "From Python" code, run as written with a release of random weights in
    place of the fetched one: its table is the CSV of prediction_process.py --release on the same files."""
    snippet = code_blocks(section("docs/prediction.md", "## From Python"), "python")[0]
    assert 'Predictor(release="v1.8-ssl")' in snippet
    write_random_release(tmp_path / "released", "v1.8-ssl")
    monkeypatch.setattr(releases, "RELEASED_DIR", str(tmp_path / "released"))
    monkeypatch.chdir(tmp_path)
    write_audio("recordings/a.wav", voice(3.0, seed=1))
    write_audio("recordings/b.flac", voice(25.0, seed=2), subtype="PCM_16")
    names = {}
    exec(compile(snippet, "docs/prediction.md", "exec"), names)
    assert prediction_process.main(["--release", "v1.8-ssl", "--input", "recordings", "--output", "p.csv"]) == 0
    with open("p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert list(names["table"].columns) == rows[0]
    assert as_rows(names["table"]) == [[r[0]] + [float(v) for v in r[1:]] for r in rows[1:]]
    assert [(r.Start, r.End) for r in names["over_time"].itertuples()] == [(0.0, 11.0), (11.0, 22.0),
                                                                           (22.0, 25.0)]
    assert names["vectors"]["Val"].shape == (3, 256)
    assert "a.wav" in capsys.readouterr().out
