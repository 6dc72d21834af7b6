"""Training under torchrun (DistributedDataParallel), run for real: 2 processes, gloo, on the
CPU (docs/reproduction.md, "Training on several GPUs or machines").

- 3 joint steps of a 2-process run equal those of a plain 1-process run (nn.BatchNorm2d, the
  losses of one process) within 1e-6, for the four temporal types and the unsupervised stage
  of -unlabel, with uneven shares and an empty one; in float64 (distributed_driver.in_float64
  says why float32 cannot show this).
- main.py under torchrun: the epoch's k-means assignment is the 1-process one, the files are
  those of a 1-process run, rank 0 alone builds the caches and prints; a process killed in
  the middle of an epoch stops the run (non-zero, one line saying how to resume), the last
  checkpoint loads, and the run resumes in one process; a backend that cannot start is one
  line.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.nn as nn

from deepemocluster import distributed
from support import distributed_driver as driver
import main as train_main
from support import ROOT
from model import build_model, load_model, read_checkpoint, released_state_dict
from deepemocluster.compute import Settings
from utils import ProcessError, UserError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
DRIVER = os.path.join(ROOT, "tests", "support", "distributed_driver.py")
# glibc: no fresh mmap (and page faults) for every large float64 buffer of the step runs
ENV = dict(os.environ, MALLOC_MMAP_MAX_="0", OMP_NUM_THREADS="1")
TIMEOUT = 900
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN_TURNS, VAL_TURNS = 5, 2     # -batch 3: batches of 3 and 2 turns, shared 2/1 and 1/1
KILL_AT_STEP = 3                  # the first step of epoch 2, after its k-means


def start(cmd):
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def run(cmd):
    return finish(start(cmd))


# --- the steps of 2 processes and of one ----------------------------------------------------
@pytest.fixture(scope="module")
def steps(tiny_corpus, tmp_path_factory):
    """The steps of 2 processes (torchrun) and, meanwhile, of one plain process (this one)."""
    base = tmp_path_factory.mktemp("steps")
    dirs = {name: base / name for name in ("two", "one")}
    inputs = [tiny_corpus["features"], tiny_corpus["labels"], tiny_corpus["norm"]]
    for folder in dirs.values():
        folder.mkdir()
    two = start(TORCHRUN + [DRIVER, "steps", str(dirs["two"])] + inputs + [str(base / "cache_two")])
    driver.run_steps(str(dirs["one"]), *inputs, str(base / "cache_one"), Settings(torch.device("cpu")))
    rc, out, err = finish(two)
    assert rc == 0, f"{out[-3000:]}\n{err[-3000:]}"
    return dirs


@pytest.mark.parametrize("mt, unlabel", driver.CONFIGS)
def test_two_processes_take_the_steps_of_one(steps, mt, unlabel):
    name = driver.config_name(mt, unlabel) + ".pt"
    one, two = (torch.load(steps[k] / name, weights_only=True) for k in ("one", "two"))
    driver.assert_same_steps(one, two, mt, unlabel, driver.TRAIN_TURNS)


# --- main.py under torchrun ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus's labels file cut to TRAIN_TURNS Train and VAL_TURNS Validation turns."""
    with open(tiny_corpus["labels"]) as f:
        head, *rows = f.read().splitlines()
    split = {s: [r for r in rows if r.endswith("," + s)] for s in ("Train", "Validation")}
    path = tmp_path_factory.mktemp("small") / "labels.csv"
    path.write_text("\n".join([head] + split["Train"][:TRAIN_TURNS] + split["Validation"][:VAL_TURNS]) + "\n")
    return dict(tiny_corpus, labels=str(path))


def flags(corpus, model_dir, cache_dir, epochs):
    return ["-ep", str(epochs), "-batch", "3", "-emo", "Act", "-nc", "4", "-mt", "Temp-Triplet",
            "--precision", "fp32", "--compile", "off", "--seed", "7", "--features", corpus["features"],
            "--labels", corpus["labels"], "--norm-dir", corpus["norm"], "--model-dir", str(model_dir),
            "--cache-dir", str(cache_dir)]


def stem(epochs):
    return f"TempDeepEmoCluster_epoch{epochs}_batch3_4clusters_Act_Temp-Triplet"


@pytest.fixture(scope="module")
def runs(small_corpus, tmp_path_factory):
    """A complete 2-process run (1 epoch) and a 2-process run killed in its second epoch,
    launched together; the 1-process run of the same flags meanwhile, in this process; then the
    killed run resumed in this process."""
    base = tmp_path_factory.mktemp("runs")
    out = {"base": base}
    for name in ("complete", "killed"):
        (base / name).mkdir()
    complete = start(TORCHRUN + [DRIVER, "main", str(base / "complete"), "-1", "0", "--"]
                     + flags(small_corpus, base / "complete" / "models", base / "cache_complete", 1))
    killed = start(TORCHRUN + [DRIVER, "main", str(base / "killed"), "1", str(KILL_AT_STEP), "--"]
                   + flags(small_corpus, base / "killed" / "models", base / "cache_killed", 2))
    assert train_main.main(flags(small_corpus, base / "one", base / "cache_one", 1)) is None
    out["complete"], out["killed"] = finish(complete), finish(killed)
    models = base / "killed" / "models"
    out["after_kill"] = sorted(os.listdir(models))
    out["resume_state"] = read_checkpoint(str(models / (stem(2) + "_resume.pth.tar")))
    with open(models / (stem(2) + "_history.json")) as f:
        out["history_after_kill"] = json.load(f)
    out["checkpoint_after_kill"] = load_model(str(models / (stem(2) + ".pth.tar")), "Temp-Triplet", 4)
    assert train_main.main(flags(small_corpus, models, base / "cache_killed", 2) + ["--resume"]) is None
    return out


def read_run(folder, epochs):
    s = os.path.join(str(folder), stem(epochs))
    with open(s + "_history.json") as f:
        history = json.load(f)
    return {"checkpoint": torch.load(s + ".pth.tar", weights_only=True),
            "resume": torch.load(s + "_resume.pth.tar", weights_only=True),
            "clusters": np.load(s + "_clusters.npy", allow_pickle=False), "history": history,
            "plots": [open(s + suffix, "rb").read(8) for suffix in ("_NMI_ValLoss.png", "_TrainLoss.png")]}


def same_layout(a, b):
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key


def test_a_two_process_run_writes_the_files_of_a_one_process_run(runs):
    rc, out, err = runs["complete"]
    assert rc == 0, err[-3000:]
    two_dir, one_dir = runs["base"] / "complete" / "models", runs["base"] / "one"
    assert sorted(os.listdir(two_dir)) == sorted(os.listdir(one_dir))
    two, one = read_run(two_dir, 1), read_run(one_dir, 1)
    assert set(two["checkpoint"]) == {"arch", "state_dict"} and two["checkpoint"]["arch"] == "vgg16"
    same_layout(two["checkpoint"]["state_dict"], one["checkpoint"]["state_dict"])
    assert any(k.startswith("cnn_features.module.") for k in two["checkpoint"]["state_dict"])
    assert set(two["resume"]) == set(one["resume"]) and two["resume"]["epoch"] == 1
    same_layout(two["resume"]["state_dict"], one["resume"]["state_dict"])
    assert two["clusters"].dtype == one["clusters"].dtype and two["clusters"].shape == (1, TRAIN_TURNS * 11)
    # The epoch's k-means assignment (features split across the processes, k-means on rank 0).
    np.testing.assert_array_equal(two["clusters"], one["clusters"])
    assert set(two["history"]) == set(one["history"])
    assert all(len(v) == 1 for v in two["history"].values())
    assert two["history"]["train_loss"][0] == pytest.approx(one["history"]["train_loss"][0], rel=1e-4)
    assert two["history"]["val_loss"][0] == pytest.approx(one["history"]["val_loss"][0], rel=1e-4)
    assert two["plots"] == [PNG_SIGNATURE] * 2
    # Rank 0 alone prints the log and builds the chunk caches.
    assert out.count("epoch 1/1 ") == 1 and out.count("training Temp-Triplet") == 1
    assert "on 2 processes (gloo, cpu, fp32), each taking its share of every batch" in out
    built = runs["base"] / "complete"
    assert sorted(os.listdir(built)) == ["built_by_rank0.txt", "models"]
    assert [n.split("_")[0] for n in (built / "built_by_rank0.txt").read_text().split()] == ["Train", "Validation"]


def test_a_killed_process_stops_the_run_and_the_last_checkpoint_loads(runs):
    rc, out, err = runs["killed"]
    assert rc != 0
    resume = str(runs["base"] / "killed" / "models" / (stem(2) + "_resume.pth.tar"))
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, err[-3000:]
    assert ours[0].startswith("error: process 0 of 2: training stopped (")
    assert ours[0].endswith(f"continue the run with the same command and --resume (on any number of "
                            f"processes): {resume}")
    assert "Traceback" not in "\n".join(line for line in err.splitlines() if line.startswith("[rank"))
    assert out.count("epoch 1/2 ") == 1 and "epoch 2/2" not in out
    # After the kill: epoch 1's files, untouched and loadable; no plots (written at the end).
    assert runs["after_kill"] == sorted(stem(2) + s for s in (".pth.tar", "_resume.pth.tar", "_clusters.npy",
                                                                "_history.json"))
    assert runs["resume_state"]["epoch"] == 1
    assert len(runs["history_after_kill"]["val_loss"]) == 1
    assert isinstance(runs["checkpoint_after_kill"], nn.Module)


def test_a_two_process_run_resumes_in_one_process(runs):
    models = runs["base"] / "killed" / "models"
    resumed = read_run(models, 2)
    assert sorted(os.listdir(models)) == sorted(stem(2) + s for s in (
        ".pth.tar", "_resume.pth.tar", "_clusters.npy", "_history.json", "_NMI_ValLoss.png", "_TrainLoss.png"))
    assert resumed["resume"]["epoch"] == 2
    assert resumed["clusters"].shape == (2, TRAIN_TURNS * 11)
    history = resumed["history"]
    assert all(len(v) == 2 for v in history.values())
    assert history["val_loss"][0] == runs["history_after_kill"]["val_loss"][0]   # epoch 1, from 2 processes
    assert history["nmi"][0] is None and 0.0 <= history["nmi"][1] <= 1.0
    # Epoch 1 of the 2-process run is epoch 1 of the complete 2-process run (same flags, seed).
    complete = read_run(runs["base"] / "complete" / "models", 1)
    np.testing.assert_array_equal(resumed["clusters"][:1], complete["clusters"])


def test_a_backend_that_cannot_start_is_one_line(small_corpus, tmp_path):
    env = dict(ENV, GLOO_SOCKET_IFNAME="no_such_interface")
    proc = subprocess.run(TORCHRUN + ["main.py"] + flags(small_corpus, tmp_path / "m", tmp_path / "c", 1),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: the gloo backend could not start the process group of 2 processes (Unable to "
                    "find address for: no_such_interface); check the network interface (GLOO_SOCKET_IFNAME, "
                    "NCCL_SOCKET_IFNAME) and that every machine reaches the rendezvous host"]
    assert not (tmp_path / "m").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchruns_sigterm_stops_a_process_blocked_in_a_collective_with_its_line(tmp_path):
    """torchrun ends the others with SIGTERM when a process dies; one blocked in a collective (a
    NCCL wait, a CUDA synchronisation: here a gloo all_reduce) cannot run Python's handler and
    would be killed 30 s later without a word. The termination watcher prints its line and ends it."""
    env = dict(ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, DRIVER, "blocked", str(tmp_path / "run_resume.pth.tar")], cwd=ROOT,
                              env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        assert procs[0].stdout.readline() == "blocked\n"
        time.sleep(2)                                     # well inside the all_reduce
        procs[0].send_signal(signal.SIGTERM)
        _, err = procs[0].communicate(timeout=120)        # the collective's own timeout: 60 minutes
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert procs[0].returncode == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: process 0 of 2: training stopped (torchrun stopped it); if another process died (killed, out "
        "of memory), its output above says why. No epoch had completed, so there is nothing to resume: run "
        "the same command again"]


# --- NCCL, as far as the CPU can show it ------------------------------------------------------
@pytest.fixture
def nccl_launch(monkeypatch):
    """Process 1 of 2 under torchrun on a machine with 2 GPUs (this CPU build of torch plays
    them); init_process_group records what it is given, and the NCCL error-handling variables
    as they are when it is called. Those variables are back as they were after the test."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    for name in distributed.NCCL_ERROR_HANDLING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")           # as torchrun sets it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))

    def init_process_group(backend, **kwargs):
        calls.append(("init_process_group", backend, kwargs,
                      {name: os.environ.get(name) for name in distributed.NCCL_ERROR_HANDLING}))

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.distributed, "new_group", lambda **kwargs: calls.append(("new_group", kwargs)))
    return calls


def test_nccl_starts_eagerly_with_blocking_waits(nccl_launch):
    """NCCL connects in init_process_group (device_id), inside its one-line error handling, and
    its collectives raise in Python (blocking wait, no watchdog to take the process down)."""
    settings = distributed.setup("auto", "fp32", "auto", timeout_minutes=7)
    gpu = torch.device("cuda", 1)
    assert (settings.device, settings.backend, settings.rank, settings.world_size) == (gpu, "nccl", 1, 2)
    assert nccl_launch == [
        ("set_device", gpu),
        ("init_process_group", "nccl", {"timeout": timedelta(minutes=7), "device_id": gpu},
         {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}),
        ("new_group", {"backend": "gloo", "timeout": distributed.CACHE_WAIT})]


def test_nccl_that_cannot_start_is_one_line(nccl_launch, monkeypatch):
    def init_process_group(backend, **kwargs):
        raise torch.distributed.DistBackendError(
            "NCCL error in: /pytorch/torch/csrc/distributed/c10d/NCCLUtils.cpp:77, unhandled cuda error (run "
            "with NCCL_DEBUG=INFO for details), NCCL version 2.27.5\nncclUnhandledCudaError: Call to CUDA "
            "function failed.\nLast error:\nCuda failure 'out of memory'")

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    with pytest.raises(UserError) as stopped:
        distributed.setup("cuda", "fp32", "nccl")
    assert str(stopped.value) == (
        "the nccl backend could not start the process group of 2 processes (NCCL error in: "
        "/pytorch/torch/csrc/distributed/c10d/NCCLUtils.cpp:77, unhandled cuda error (run with NCCL_DEBUG=INFO "
        "for details), NCCL version 2.27.5); check the network interface (GLOO_SOCKET_IFNAME, "
        "NCCL_SOCKET_IFNAME) and that every machine reaches the rendezvous host")

    def set_device(device):
        raise RuntimeError("CUDA error: CUDA-capable device(s) is/are busy or unavailable\nCUDA kernel errors "
                           "might be asynchronously reported at some other API call")

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    with pytest.raises(UserError, match=r"^process 1 of 2 cannot use cuda:1 \(CUDA error: CUDA-capable "
                                        r"device\(s\) is/are busy or unavailable\)$"):
        distributed.setup("cuda", "fp32", "nccl")


def test_a_nccl_collective_that_times_out_stops_the_process_with_one_line(tmp_path):
    """What a blocking wait raises once the timeout passes (DistBackendError, the NCCL source line
    and the stack after the first line) becomes the line that says how to resume."""
    resume = tmp_path / "run_resume.pth.tar"
    resume.write_bytes(b"saved")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(ProcessError) as stopped:
            with distributed.stopping_cleanly(Settings(torch.device("cuda", 1), rank=1, world_size=2,
                                                       backend="nccl"), str(resume)):
                raise torch.distributed.DistBackendError(
                    "[PG ID 0 PG GUID 0(default_pg) Rank 1] Watchdog caught collective operation timeout: "
                    "WorkNCCL(SeqNum=12, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for "
                    "600012 milliseconds before timing out.\nException raised from checkTimeout at "
                    "/pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:712 (most recent call first):")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert str(stopped.value) == (
        "process 1 of 2: training stopped (an exchange with the other processes failed: Watchdog caught "
        "collective operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
        "Timeout(ms)=600000) ran for 600012 milliseconds before timing out); if another process died (killed, "
        "out of memory), its output above says why. The last saved checkpoint is untouched; continue the run "
        f"with the same command and --resume (on any number of processes): {resume}")


# --- the pieces, in one process -------------------------------------------------------------------
TWO = Settings(torch.device("cpu"), rank=1, world_size=2, backend="gloo")


def test_each_process_takes_a_contiguous_share_of_every_batch():
    span = np.array([9, 4, 7, 1, 3])
    rank0 = distributed.share(span, Settings(torch.device("cpu"), rank=0, world_size=2, backend="gloo"))
    assert rank0.tolist() == [9, 4, 7] and distributed.share(span, TWO).tolist() == [1, 3]
    assert distributed.share(np.array([5]), TWO).tolist() == []
    assert distributed.share_sizes(5, TWO) == [3, 2] and distributed.share_sizes(1, TWO) == [1, 0]
    assert distributed.share(span, Settings(torch.device("cpu"))) is span


def test_launch_settings_that_cannot_work_are_refused(monkeypatch):
    with pytest.raises(UserError, match=r"^-batch 1 is smaller than the 2 processes of this run"):
        distributed.check_batch(1, TWO.world_size)
    distributed.check_batch(2, TWO.world_size)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^torchrun started 2 processes on this machine, which has 1 CUDA "
                                        r"device\(s\): give --nproc_per_node 1 or fewer"):
        distributed.process_device("cuda", 1, 2)
    with pytest.raises(UserError, match=r"^--device cuda:1 names one GPU, but under torchrun"):
        distributed.process_device("cuda:1", 0, 1)
    assert distributed.process_device("cpu", 1, 2) == torch.device("cpu")
    assert distributed.process_device("cuda", 0, 1) == torch.device("cuda", 0)


def test_compiling_is_refused_under_torchrun(tiny_corpus):
    args = train_main.parse_args(["-mt", "Temp-Triplet", "-nc", "4", "--compile", "on"])
    with pytest.raises(UserError, match=r"^--compile on is not supported under torchrun"):
        train_main.build_training_model(args, TWO, 100)


def test_a_plain_run_has_no_process_group_and_plain_batchnorm():
    settings = distributed.setup("cpu", "fp32")
    assert not settings.distributed and settings.is_main and settings.world_size == 1
    assert not torch.distributed.is_initialized()
    args = train_main.parse_args(["-mt", "Temp-CNN", "-nc", "4", "--precision", "fp32"])
    model, compiled = train_main.build_training_model(args, settings, 10)
    norms = [type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == [nn.BatchNorm2d] * 9 and not compiled


def test_global_batchnorm_in_one_process_is_batchnorm():
    """Same statistics, outputs, running statistics and state-dict keys as BatchNorm2d; the
    checkpoint keeps the released layout; folding for evaluation still finds it."""
    from model import fold_batchnorm

    torch.manual_seed(0)
    plain = build_model("Temp-CNN", 4)
    converted = distributed.use_global_batchnorm(build_model("Temp-CNN", 4))
    converted.load_state_dict(plain.state_dict())
    assert sum(isinstance(m, distributed.GlobalBatchNorm2d) for m in converted.modules()) == 9
    assert set(released_state_dict(converted)) == set(released_state_dict(plain))
    x = torch.randn(2, 11, 62, 128)
    for model in (plain, converted):
        model.train()
    with torch.no_grad():
        outputs = []
        for model in (plain, converted):
            torch.manual_seed(1)                                    # the same dropout masks
            outputs.append(model(x))
        for a, b in zip(*outputs):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
    bn = converted.cnn_features[1]
    xs = torch.randn(4, 32, 5, 6) * 3 + 1
    ref = nn.BatchNorm2d(32)
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(xs), ref(xs), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, ref.running_var)          # unbiased, momentum 0.1
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    folded = fold_batchnorm(converted.eval())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.cnn_features)
