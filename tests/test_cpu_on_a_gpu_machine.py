"""`--device cpu` on a machine with GPUs makes no CUDA call (README: "--device cpu keeps both
on the CPU"): training (with --resume), testing, prediction and the Predictor.

Any CUDA call opens a context on a GPU: N of them from a gloo torchrun, and on GPUs in
exclusive-process mode the run fails outright. The CPU build of torch here plays a machine
with one GPU: torch.cuda says a device is there, and every call that would open a context
(torch.cuda's lazy initialisation, which tensors on a GPU also go through, the device and
random-state queries, and pinning memory) is recorded and refused.
"""
import os

import pytest
import torch

import main as train_main
import online_testing
import prediction_process
from deepemocluster.predictor import Predictor
from support.models import save_models

K, EPOCHS, BATCH, MT = 4, 1, 4, "Temp-Triplet"      # the models predicted with
CONTEXT_CALLS = ("_lazy_init", "init", "current_device", "set_device", "synchronize", "get_rng_state",
                 "get_rng_state_all", "set_rng_state", "set_rng_state_all", "is_bf16_supported",
                 "get_device_capability", "get_device_properties", "mem_get_info")
CPU = ["--device", "cpu"]


class Stopped(Exception):
    """The training stopped after its first epoch (as a kill would)."""


@pytest.fixture
def gpu_machine(monkeypatch):
    """The calls that would open a CUDA context, in order (each refused with a RuntimeError)."""
    calls = []

    def refused(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"a CPU run called {name}")
        return call

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in CONTEXT_CALLS:
        monkeypatch.setattr(torch.cuda, name, refused(f"torch.cuda.{name}"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", refused("Tensor.pin_memory"))
    return calls


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained Act, Dom and Val models (K = 4) under the names the flags below give."""
    model_dir = str(tmp_path_factory.mktemp("cpu_models"))
    save_models(model_dir, MT, [K] * 3, [0] * 3, EPOCHS, BATCH)
    return model_dir


def model_flags(model_dir, norm_dir):
    return ["-ep", str(EPOCHS), "-batch", str(BATCH), "-nc", str(K), "-mt", MT, "--model-dir", model_dir,
            "--norm-dir", norm_dir]


def test_training_and_its_resumption(gpu_machine, tiny_corpus, tmp_path, monkeypatch):
    argv = ["-ep", "2", "-batch", "8", "-nc", "4", "-emo", "Act", "-mt", "Temp-Triplet", "--compile", "off",
            "--features", tiny_corpus["features"], "--labels", tiny_corpus["labels"],
            "--norm-dir", tiny_corpus["norm"], "--model-dir", str(tmp_path / "m"),
            "--cache-dir", str(tmp_path / "c")] + CPU
    save = train_main.save_epoch_state

    def stopped_after_epoch_1(files, state):
        save(files, state)
        if state.epoch == 1:
            raise Stopped

    monkeypatch.setattr(train_main, "save_epoch_state", stopped_after_epoch_1)
    with pytest.raises(Stopped):
        train_main.main(argv)
    monkeypatch.setattr(train_main, "save_epoch_state", save)
    train_main.main(argv + ["--resume"])
    assert gpu_machine == []
    path = str(tmp_path / "m" / "TempDeepEmoCluster_epoch2_batch8_4clusters_Act_Temp-Triplet_resume.pth.tar")
    resume = torch.load(path, weights_only=True)
    assert resume["epoch"] == 2 and resume["cuda_rng"] is None


def test_testing(gpu_machine, tiny_corpus, models, tmp_path, capsys):
    online_testing.main(model_flags(models, tiny_corpus["norm"]) + [
        "-emo", "Act", "--features", tiny_corpus["features"], "--labels", tiny_corpus["labels"],
        "--cache-dir", str(tmp_path / "c")] + CPU)
    assert "Test1 CCC (6 turns): " in capsys.readouterr().out
    assert gpu_machine == []


def test_prediction(gpu_machine, tiny_corpus, models, tmp_path):
    output = tmp_path / "predictions.csv"
    prediction_process.main(model_flags(models, tiny_corpus["norm"]) + [
        "--input", tiny_corpus["audio"], "--output", str(output)] + CPU)
    assert len(output.read_text().splitlines()) == 1 + 28
    assert gpu_machine == []


def test_the_predictor(gpu_machine, tiny_corpus, models):
    predictor = Predictor(model_dir=models, norm_dir=tiny_corpus["norm"], model_type=MT, epochs=EPOCHS,
                          batch_size=BATCH, num_clusters=K, device="cpu")
    table = predictor.predict(sorted(os.path.join(tiny_corpus["audio"], f)
                                     for f in os.listdir(tiny_corpus["audio"]))[:3])
    assert len(table) == 3
    assert gpu_machine == []
