"""GPU checks: they need an NVIDIA GPU and are skipped without CUDA (run `bash gpu_check.sh`
on a GPU machine; it runs this file and prints a summary; tests/test_gpu_check.py tests
gpu_check.sh itself).

(a) CUDA predictions of released-layout checkpoints equal the CPU fp32 ones within 1e-4
    under --precision fp32 (and under the default, which infers in fp32 too); TF32 is off.
(b) The training's k-means (main.cluster_chunks beside a network on the GPU) runs through
    faiss's GPU index on that GPU and gives the CPU partition on well-separated data.
(c) A bf16 training on the demo corpus (CUDA) ends with finite losses and a Test1 CCC within
    0.05 of the CPU fp32 run at the same seed; 2 epochs by default. After 2 epochs the demo
    models have learned little (validation CCC loss 0.98 in the shipped models' history), so
    the two CCCs are both small and this mostly shows that bf16 training on the GPU runs and
    stays finite; GPU_CHECK_EPOCHS=10 makes it a real comparison (by epoch 10 arousal has
    levelled off), and then the CPU run must also have learned (CCC > 0.3).
(d) bench.py --device cuda --quick writes its table.
(e) torchrun --nproc_per_node <GPUs> main.py: 2 demo epochs with NCCL, one process per GPU, end
    with finite losses and validation losses within 0.05 of one process's with the same flags
    (each process draws its own dropout masks, so only (f) can ask for equality); both, and the
    seconds per epoch, are written for the summary. With one GPU, torchrun's single process
    still runs the distributed path (NCCL, DistributedDataParallel, global-batch BatchNorm), but
    NCCL moves no data.
(f) With 2 or more GPUs: N processes over NCCL take the training steps of one process (float64,
    dropout off; tests/test_distributed.py's check, distributed_driver.py) within 1e-6, for the
    four temporal types and -unlabel, with batches of N turns whose last leaves the last process
    an empty share (recorded, not assumed).

Everything is written under $GPU_CHECK_DIR (gpu_check.sh sets it) or pytest's temporary
folder, never in the repository's trained_models/ or NormTerm/.

GPU_CHECK_DRY_RUN=1 runs the checks with the CPU standing in for the GPU, to test the checks'
own logic on a machine without one: it proves nothing about a GPU ((a)'s TF32 check is skipped;
(b) checks the CPU index beside a CPU network; (c) compares bf16 with fp32 training on the CPU;
(e) and (f) run 2 processes with gloo).
GPU_CHECK_DEMO_SIZE scales the demo corpus of (c) and (e) (make_demo_corpus.py --size;
default 1, the default corpus).
"""
import contextlib
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
from support import distributed_driver as driver
from support.corpus import write_corpus
from support.gpu_check import faiss_advice

DRY_RUN = bool(os.environ.get("GPU_CHECK_DRY_RUN"))
DEVICE = "cpu" if DRY_RUN else "cuda"
PROCESSES = 2 if DRY_RUN else torch.cuda.device_count()      # one per GPU
BACKEND = "gloo" if DRY_RUN else "nccl"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or DRY_RUN),
                                reason="needs a CUDA device (run bash gpu_check.sh on a machine with an NVIDIA GPU)")

PREDICTION_TOLERANCE = 1e-4      # on the 1-7 rating scale
CCC_TOLERANCE = 0.05
VAL_LOSS_TOLERANCE = CCC_TOLERANCE     # the validation loss is 1 - CCC
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
    for device, precision in dict.fromkeys((("cpu", "fp32"), (DEVICE, "fp32"), (DEVICE, "auto"))):  # the dry run's CPU fp32 once
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
FAISS_INDEXES = ("GpuIndexFlatL2", "IndexFlatL2")


@contextlib.contextmanager
def recorded_indexes(faiss):
    """The faiss indexes made inside the block: (class name, GPU device or None), in order."""
    made, real = [], {name: getattr(faiss, name) for name in FAISS_INDEXES if hasattr(faiss, name)}

    def recording(name):
        def make(*args):
            made.append((name, int(args[-1].device) if name.startswith("Gpu") else None))
            return real[name](*args)
        return make
    for name in real:
        setattr(faiss, name, recording(name))
    try:
        yield made
    finally:
        for name, cls in real.items():
            setattr(faiss, name, cls)


def test_kmeans_runs_on_the_gpu_through_faiss(work, monkeypatch):
    """main.cluster_chunks beside a network on the GPU (as every epoch of a training runs it)
    goes through faiss's GPU index on that GPU, and gives the partition of faiss's CPU k-means
    at the same seed, on well-separated data."""
    import clustering
    import faiss
    import main as train_main
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from deepemocluster.compute import Settings

    if not DRY_RUN and not clustering.faiss_has_gpu():
        pytest.skip(f"faiss {faiss.__version__} has no GPU support here (or sees no GPU): k-means on the GPU "
                    f"not checked; {faiss_advice(torch.version.cuda)}")
    rng = np.random.default_rng(0)
    k, d, per = 10, 256, 500
    centres = rng.normal(0.0, 10.0, (k, d))
    x = (centres[np.repeat(np.arange(k), per)] + rng.normal(0.0, 0.1, (k * per, d))).astype(np.float32)
    calls = []
    run_kmeans = train_main.run_kmeans

    def recorded_run_kmeans(features, n_clusters, seed, use_gpu=None, gpu_index=0):
        calls.append((seed, use_gpu, gpu_index))
        return run_kmeans(features, n_clusters, seed, use_gpu, gpu_index)
    monkeypatch.setattr(train_main, "run_kmeans", recorded_run_kmeans)
    settings = Settings(torch.device(DEVICE))
    runs = 3
    with recorded_indexes(faiss) as made:
        assignments = [train_main.cluster_chunks(x, k, np.random.default_rng(seed), settings) for seed in range(runs)]
    on_gpu = not DRY_RUN
    assert [(use_gpu, gpu_index) for _, use_gpu, gpu_index in calls] == [(on_gpu, 0)] * runs
    assert made == [("GpuIndexFlatL2", 0) if on_gpu else ("IndexFlatL2", None)] * runs
    if on_gpu:
        assert faiss.get_num_gpus() > 0
    for (seed, _, _), assignment in zip(calls, assignments):
        cpu, _ = clustering.run_kmeans(x, k, seed, use_gpu=False)
        assert adjusted_rand_score(cpu, assignment) == pytest.approx(1.0)
        assert normalized_mutual_info_score(cpu, assignment) == pytest.approx(1.0)
    with open(os.path.join(work, "b_kmeans.json"), "w") as f:     # for gpu_check.sh's summary
        json.dump({"device": DEVICE, "runs": runs, "index": made[0][0], "gpu_index": made[0][1],
                   "faiss": faiss.__version__,
                   "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}, f, indent=1)


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
    scale = ["--scale-turns", "0"] if DRY_RUN else ["--scale-turns", "64", "--scale-source", "synthetic"]
    proc = run(["bench.py", "--device", DEVICE, "--quick", *scale,     # the dry run: no scale study (test_bench's)
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
    common = ["-ep", str(TORCHRUN_EPOCHS), "-batch", "64", "-emo", TRAIN_EMOTION, "-nc", "10", "-mt", "Temp-Triplet",
              "--features", demo["features"], "--labels", demo["labels"], "--norm-dir", demo["norm"],
              "--cache-dir", os.path.join(demo["root"], "cache"), "--device", DEVICE, "--seed", str(SEED),
              "--overwrite"]
    from model import checkpoint_name

    histories = {}
    for name, launch in (("one", []), ("torchrun", TORCHRUN[1:] + [str(PROCESSES)])):
        model_dir = os.path.join(demo["root"], f"models_e_{name}")
        proc = run(launch + ["main.py"] + common + ["--model-dir", model_dir])
        if launch:
            assert f"on {PROCESSES} processes ({BACKEND}, {DEVICE}," in proc.stdout, proc.stdout[-2000:]
            assert proc.stdout.count(f"epoch {TORCHRUN_EPOCHS}/{TORCHRUN_EPOCHS}") == 1     # rank 0 alone prints
        history = os.path.join(model_dir, checkpoint_name(TORCHRUN_EPOCHS, 64, 10, TRAIN_EMOTION, "Temp-Triplet")
                               .replace(".pth.tar", "_history.json"))
        with open(history) as f:
            histories[name] = json.load(f)
        assert len(histories[name]["train_loss"]) == TORCHRUN_EPOCHS
        assert np.isfinite(histories[name]["train_loss"]).all() and np.isfinite(histories[name]["val_loss"]).all()
    one, many = histories["one"]["val_loss"], histories["torchrun"]["val_loss"]
    largest = float(np.max(np.abs(np.subtract(many, one))))
    with open(os.path.join(work, "e_torchrun.json"), "w") as f:   # for gpu_check.sh's summary
        json.dump({"gpus": PROCESSES, "backend": BACKEND, "epochs": TORCHRUN_EPOCHS,
                   "seconds_one_process": histories["one"]["seconds"],
                   "seconds_torchrun": histories["torchrun"]["seconds"],
                   "val_loss_one_process": one, "val_loss_torchrun": many,
                   "largest_difference": largest, "tolerance": VAL_LOSS_TOLERANCE}, f, indent=1)
    assert largest <= VAL_LOSS_TOLERANCE, f"validation losses: torchrun {many}, one process {one}"


# --- (f) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def steps(work):
    """The steps of one process per GPU (torchrun, NCCL) and, meanwhile, of one plain process on
    the first GPU (this one), on a corpus with the turns they need; and the share of each batch
    every process took."""
    if PROCESSES < 2:
        pytest.skip(f"one GPU: torchrun would run one process, and NCCL would move no data; the "
                    f"N-process = one-process check needs 2 or more GPUs (found {PROCESSES})")
    import feat_extract
    import norm_para
    from deepemocluster.compute import Settings

    need = driver.sizes(PROCESSES)
    root = os.path.join(work, "f_steps")
    corpus = os.path.join(root, "corpus")
    labels = os.path.join(corpus, "Labels", "labels_concensus.csv")
    if not os.path.isfile(labels):
        write_corpus(corpus, counts=(("Train", max(16, need.train)), ("Validation", max(6, need.val)), ("Test1", 6)))
    features, norm = os.path.join(corpus, "Features"), os.path.join(corpus, "NormTerm")
    assert feat_extract.main(["--input", os.path.join(corpus, "Audios"), "--output", features]) == 0
    norm_para.main(["--labels", labels, "--features", features, "--norm-dir", norm])
    dirs = {name: os.path.join(root, name) for name in ("many", "one")}
    for folder in dirs.values():
        os.makedirs(folder, exist_ok=True)
    inputs = [features, labels, norm]
    driver_py = os.path.join(ROOT, "tests", "support", "distributed_driver.py")
    many = subprocess.Popen(TORCHRUN + [str(PROCESSES), driver_py, "steps", dirs["many"]] + inputs
                            + [os.path.join(root, "cache_many"), DEVICE], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    driver.run_steps(dirs["one"], *inputs, os.path.join(root, "cache_one"), Settings(torch.device(DEVICE)),
                     PROCESSES)
    out, err = many.communicate(timeout=1800)
    assert many.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    shares = {}
    for rank in range(PROCESSES):
        with open(os.path.join(dirs["many"], f"shares_rank{rank}.json")) as f:
            shares[rank] = json.load(f)
    return dirs, shares, {}


@pytest.mark.parametrize("mt, unlabel", driver.CONFIGS)
def test_processes_take_the_steps_of_one(steps, mt, unlabel, work):
    dirs, shares, largest = steps
    name = driver.config_name(mt, unlabel) + ".pt"
    one, many = (torch.load(os.path.join(dirs[k], name), weights_only=True, map_location="cpu")
                 for k in ("one", "many"))
    largest[mt + (" -unlabel" if unlabel else "")] = driver.assert_same_steps(one, many, mt, unlabel,
                                                                              driver.sizes(PROCESSES).train)
    # Every batch was shared out whole, and the last process had an empty share of some batch.
    assert len({len(taken) for taken in shares.values()}) == 1
    for batch in zip(*shares.values()):
        assert sum(part for _, part in batch) == batch[0][0]
    empty = [rank for rank, taken in shares.items() if any(part == 0 for _, part in taken)]
    assert empty == [PROCESSES - 1]
    with open(os.path.join(work, "f_steps.json"), "w") as f:     # for gpu_check.sh's summary
        json.dump({"processes": PROCESSES, "backend": BACKEND, "device": DEVICE, "configs": list(largest),
                   "largest_difference": max(largest.values()), "tolerance": driver.STATE_TOLERANCE,
                   "batches": len(shares[0]), "batch_turns": driver.sizes(PROCESSES).batch,
                   "empty_shares": {rank: sum(part == 0 for _, part in shares[rank]) for rank in empty}},
                  f, indent=1)
