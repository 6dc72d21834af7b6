"""GPU checks: they need an NVIDIA GPU and are skipped without CUDA (run `bash gpu_check.sh`
on a GPU machine; it runs this file and prints a summary).

(a) CUDA predictions of released-layout checkpoints equal the CPU fp32 ones within 1e-4
    under --precision fp32 (and under the default, which infers in fp32 too); TF32 is off.
(b) faiss GPU k-means gives the CPU partition on well-separated data.
(c) A bf16 training on the demo corpus (CUDA) ends with finite losses and a Test1 CCC within
    0.05 of the CPU fp32 run at the same seed; 2 epochs by default. After 2 epochs the demo
    models have learned little (validation CCC loss 0.98 in the shipped models' history), so
    the two CCCs are both small and this mostly shows that bf16 training on the GPU runs and
    stays finite; GPU_CHECK_EPOCHS=10 makes it a real comparison (by epoch 10 arousal has
    levelled off), and then the CPU run must also have learned (CCC > 0.3).
(d) bench.py --device cuda --quick writes its table.
(e) torchrun --nproc_per_node <GPUs> main.py: 2 demo epochs with NCCL, one process per GPU, end
    with finite losses; their seconds per epoch are written beside those of one process with the
    same flags (with one GPU, torchrun's single process still runs the distributed path: NCCL,
    DistributedDataParallel, global-batch BatchNorm).

Everything is written under $GPU_CHECK_DIR (gpu_check.sh sets it) or pytest's temporary
folder, never in the repository's trained_models/ or NormTerm/.

GPU_CHECK_DRY_RUN=1 runs the checks with the CPU standing in for the GPU, to test the checks'
own plumbing on a machine without one: it proves nothing about a GPU ((b) is skipped; (c)
then compares bf16 with fp32 training on the CPU; (e) runs 2 processes with gloo).
GPU_CHECK_DEMO_SIZE scales the demo corpus of (c) and (e) (make_demo_corpus.py --size;
default 1, the default corpus).
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from support import ROOT

DRY_RUN = bool(os.environ.get("GPU_CHECK_DRY_RUN"))
DEVICE = "cpu" if DRY_RUN else "cuda"
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN),
                                reason="needs a CUDA device (run bash gpu_check.sh on a machine with an NVIDIA GPU)")

PREDICTION_TOLERANCE = 1e-4      # on the 1-7 rating scale
CCC_TOLERANCE = 0.05
TRAIN_EMOTION = "Act"            # the attribute whose CCC varies least between runs (README)
TRAIN_EPOCHS = int(os.environ.get("GPU_CHECK_EPOCHS", "2"))
LEARNED_CCC = 0.3                # what the CPU fp32 run must reach for the comparison to mean something
SEED = 31


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = os.environ.get("GPU_CHECK_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        return folder
    return str(tmp_path_factory.mktemp("gpu_check"))


def run(cmd, timeout=1800):
    proc = subprocess.run([sys.executable] + cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# --- (a) --------------------------------------------------------------------------------
def test_configure_backends_turns_tf32_off_for_fp32():
    from deepemocluster.compute import configure_backends

    if DRY_RUN:
        pytest.skip("dry run: configure_backends only acts on CUDA")
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.benchmark)
    try:
        configure_backends(torch.device("cuda"))
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.benchmark is True
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


@torch.no_grad()
def spread_weights(model, gen):
    """Random weights that make predictions differ from turn to turn (a fresh model's N(0, 0.01)
    Linear layers give nearly constant outputs, which would make the comparison empty), and
    BatchNorm statistics away from 0/1, so that folding them into the convolutions is exercised."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 1.0 / m.in_features ** 0.5, generator=gen)
            m.bias.normal_(0.0, 0.1, generator=gen)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.1, generator=gen)


def write_released_models(model_dir, temporal_type, seed):
    """Three random attribute models saved in the released layout under the released names."""
    from model import ARCH, build_model, checkpoint_name, released_state_dict
    from utils import EMOTIONS, save_torch

    for k, emo in enumerate(EMOTIONS):
        torch.manual_seed(seed + k)
        model = build_model(temporal_type, 10)
        spread_weights(model, torch.Generator().manual_seed(seed + k))
        state = released_state_dict(model)
        assert any(".module." in key for key in state)          # the DataParallel layout
        save_torch(os.path.join(model_dir, checkpoint_name(30, 64, 10, emo, temporal_type)),
                   {"arch": ARCH, "state_dict": state})


def read_predictions(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {r["File_Name"]: np.array([float(r[c]) for c in ("Aro-Score", "Dom-Score", "Val-Score")]) for r in rows}


@pytest.mark.parametrize("models", ["Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet", "shipped demo"])
def test_cuda_predictions_equal_cpu_fp32(models, tiny_corpus, work):
    """Random models of each temporal type in the released layout and names, and the shipped
    demo models (trained, so their predictions follow the input; read, never written)."""
    folder = os.path.join(work, "a_predictions", models.replace(" ", "_"))
    if models == "shipped demo":
        temporal_type, model_dir, norm_dir = "Temp-Triplet", os.path.join(ROOT, "trained_models"), \
            os.path.join(ROOT, "NormTerm")
    else:
        temporal_type, model_dir, norm_dir = models, os.path.join(folder, "models"), tiny_corpus["norm"]
        write_released_models(model_dir, temporal_type, seed=100)
    out = {}
    for device, precision in (("cpu", "fp32"), (DEVICE, "fp32"), (DEVICE, "auto")):
        csv_path = os.path.join(folder, f"pred_{device}_{precision}.csv")
        run(["prediction_process.py", "--input", tiny_corpus["audio"], "--output", csv_path, "-mt", temporal_type,
             "--model-dir", model_dir, "--norm-dir", norm_dir, "--device", device, "--precision", precision])
        out[device, precision] = read_predictions(csv_path)
    cpu = out["cpu", "fp32"]
    spread = np.stack(list(cpu.values())).std(axis=0).min()
    # Random deep ReLU networks map all inputs to nearly the same output; trained ones do not.
    assert spread > (0.05 if models == "shipped demo" else 0.0), f"predictions nearly constant ({spread:.2g})"
    for key in ((DEVICE, "fp32"), (DEVICE, "auto")):
        assert set(out[key]) == set(cpu)
        diff = max(float(np.max(np.abs(out[key][name] - cpu[name]))) for name in cpu)
        assert diff <= PREDICTION_TOLERANCE, f"{key}: largest difference to CPU fp32 {diff:.3g}"


# --- (b) --------------------------------------------------------------------------------
def test_faiss_gpu_kmeans_gives_the_cpu_partition():
    import clustering
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if DRY_RUN or not clustering.faiss_has_gpu():
        pytest.skip("faiss has no GPU support here (faiss-cpu installed, or no GPU visible to faiss): "
                    "GPU k-means not checked")
    rng = np.random.default_rng(0)
    k, d, per = 10, 256, 500
    centres = rng.normal(0.0, 10.0, (k, d))
    x = (centres[np.repeat(np.arange(k), per)] + rng.normal(0.0, 0.1, (k * per, d))).astype(np.float32)
    for seed in (1, 2, 3):
        cpu, _ = clustering.run_kmeans(x, k, seed, use_gpu=False)
        gpu, _ = clustering.run_kmeans(x, k, seed, use_gpu=True)
        assert adjusted_rand_score(cpu, gpu) == pytest.approx(1.0)
        assert normalized_mutual_info_score(cpu, gpu) == pytest.approx(1.0)


# --- (c) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(work):
    """The default demo corpus, its features and NormTerm, in the work folder."""
    import make_demo_corpus

    root = os.path.join(work, "c_demo")
    corpus = os.path.join(root, "demo_corpus")
    labels = os.path.join(corpus, "Labels", make_demo_corpus.LABEL_FILE)
    if not os.path.isfile(labels):       # written last: the corpus is whole
        make_demo_corpus.main(["--out", corpus, "--predict", "0", "--size",
                               os.environ.get("GPU_CHECK_DEMO_SIZE", "1")])
    feats = os.path.join(root, "Features")
    workers = str(max(1, min(8, (os.cpu_count() or 1))))
    run(["feat_extract.py", "--input", os.path.join(corpus, "Audios"), "--output", feats, "--workers", workers])
    norm = os.path.join(root, "NormTerm")
    run(["norm_para.py", "--labels", labels, "--features", feats, "--norm-dir", norm])
    return {"root": root, "features": feats, "labels": labels, "norm": norm}


def train_and_test(demo, device, precision):
    tag = f"{device}_{precision}"
    model_dir = os.path.join(demo["root"], f"models_{tag}")
    common = ["-ep", str(TRAIN_EPOCHS), "-batch", "64", "-emo", TRAIN_EMOTION, "-nc", "10", "-mt", "Temp-Triplet",
              "--features", demo["features"], "--labels", demo["labels"], "--norm-dir", demo["norm"],
              "--model-dir", model_dir, "--cache-dir", os.path.join(demo["root"], "cache")]
    run(["main.py"] + common + ["--device", device, "--precision", precision, "--seed", str(SEED), "--overwrite"])
    result = os.path.join(demo["root"], f"test1_{tag}.json")
    # Both models tested the same way, on the CPU in fp32: only the training differs.
    run(["online_testing.py"] + common + ["--device", "cpu", "--precision", "fp32", "--result-json", result])
    from model import checkpoint_name

    history = os.path.join(model_dir, checkpoint_name(TRAIN_EPOCHS, 64, 10, TRAIN_EMOTION, "Temp-Triplet")
                           .replace(".pth.tar", "_history.json"))
    with open(history) as f:
        hist = json.load(f)
    with open(result) as f:
        return json.load(f)["ccc"], hist


def test_bf16_training_on_cuda_matches_cpu_fp32(demo, work):
    major = torch.cuda.get_device_capability()[0] if not DRY_RUN else 8
    precision = "bf16" if major >= 8 else "fp32"     # bf16 convolutions need Ampere or later
    ccc_gpu, hist_gpu = train_and_test(demo, DEVICE, precision)
    ccc_cpu, hist_cpu = train_and_test(demo, "cpu", "fp32")
    for hist in (hist_gpu, hist_cpu):
        assert len(hist["train_loss"]) == TRAIN_EPOCHS
        assert np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["val_loss"]).all()
    with open(os.path.join(work, "c_training.json"), "w") as f:  # for gpu_check.sh's summary
        json.dump({"emotion": TRAIN_EMOTION, "epochs": TRAIN_EPOCHS, "seed": SEED, "gpu_precision": precision,
                   "test1_ccc_cuda": ccc_gpu, "test1_ccc_cpu_fp32": ccc_cpu,
                   "seconds_cuda": hist_gpu["seconds"], "seconds_cpu": hist_cpu["seconds"]}, f, indent=1)
    if TRAIN_EPOCHS >= 10:
        assert ccc_cpu > LEARNED_CCC, f"the CPU fp32 run learned too little to compare with (CCC {ccc_cpu:.4f})"
    if precision != "bf16":
        pytest.skip(f"this GPU (compute {major}.x) has no native bf16: trained in fp32 instead; "
                    f"Test1 CCC cuda {ccc_gpu:.4f} vs cpu {ccc_cpu:.4f}")
    assert abs(ccc_gpu - ccc_cpu) <= CCC_TOLERANCE, f"Test1 CCC cuda bf16 {ccc_gpu:.4f} vs cpu fp32 {ccc_cpu:.4f}"


# --- (d) --------------------------------------------------------------------------------
def test_bench_on_cuda_writes_its_table(work):
    table = os.path.join(work, "bench_cuda.txt")
    result = os.path.join(work, "bench_cuda.json")
    proc = run(["bench.py", "--device", DEVICE, "--quick", "--scale-turns", "64", "--scale-source", "synthetic",
                "--workdir", os.path.join(work, "d_bench"), "--json", result], timeout=3600)
    with open(table, "w") as f:
        f.write(proc.stdout)
    assert f"device {DEVICE}" in proc.stdout and "ONE TRAINING EPOCH" in proc.stdout
    with open(result) as f:
        data = json.load(f)
    if not DRY_RUN:
        assert data["machine"]["gpu"] == torch.cuda.get_device_name(0)
        assert data["estimate_v1_12"]["gpu_feed"]["chunks_per_s"] > 0
    assert all(r["value"] is not None and np.isfinite(r["value"]) for r in data["rows"])


# --- (e) --------------------------------------------------------------------------------
TORCHRUN_EPOCHS = 2


def test_torchrun_on_every_gpu(demo, work):
    gpus = 2 if DRY_RUN else torch.cuda.device_count()
    backend = "gloo" if DRY_RUN else "nccl"
    common = ["-ep", str(TORCHRUN_EPOCHS), "-batch", "64", "-emo", TRAIN_EMOTION, "-nc", "10", "-mt", "Temp-Triplet",
              "--features", demo["features"], "--labels", demo["labels"], "--norm-dir", demo["norm"],
              "--cache-dir", os.path.join(demo["root"], "cache"), "--device", DEVICE, "--seed", str(SEED),
              "--overwrite"]
    from model import checkpoint_name

    histories = {}
    for name, launch in (("one", []), ("torchrun", ["-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(gpus)])):
        model_dir = os.path.join(demo["root"], f"models_e_{name}")
        proc = run(launch + ["main.py"] + common + ["--model-dir", model_dir])
        if launch:
            assert f"on {gpus} processes ({backend}, {DEVICE}," in proc.stdout, proc.stdout[-2000:]
            assert proc.stdout.count(f"epoch {TORCHRUN_EPOCHS}/{TORCHRUN_EPOCHS}") == 1     # rank 0 alone prints
        history = os.path.join(model_dir, checkpoint_name(TORCHRUN_EPOCHS, 64, 10, TRAIN_EMOTION, "Temp-Triplet")
                               .replace(".pth.tar", "_history.json"))
        with open(history) as f:
            histories[name] = json.load(f)
        assert len(histories[name]["train_loss"]) == TORCHRUN_EPOCHS
        assert np.isfinite(histories[name]["train_loss"]).all() and np.isfinite(histories[name]["val_loss"]).all()
    with open(os.path.join(work, "e_torchrun.json"), "w") as f:   # for gpu_check.sh's summary
        json.dump({"gpus": gpus, "backend": backend, "epochs": TORCHRUN_EPOCHS,
                   "seconds_one_process": histories["one"]["seconds"],
                   "seconds_torchrun": histories["torchrun"]["seconds"],
                   "val_loss_one_process": histories["one"]["val_loss"],
                   "val_loss_torchrun": histories["torchrun"]["val_loss"]}, f, indent=1)
