"""Items 2 and 6: the training epoch of both designs, its table rows, the profile of one training batch
and the compilation time of the encoder."""
import json
import os
import subprocess
import sys

import main as train_main
from bench import ROOT, SEED
from bench.baseline import baseline_epoch
from bench.epoch import EPOCH_STAGES, epoch_accounting, fast_epoch, median_epoch
from bench.machine import fast_backends, original_backends
from bench.measure import log, sync
from bench.report import row
from utils import CHUNKS_PER_TURN


def bench_epochs(fast, base, train, val, reader, val_reader, args, settings):
    """A warm-up epoch, then --repeats epochs of each design, interleaved: per-stage seconds.

    Both models start from the same weights, with the optimisers made while the cluster head
    is off (method §6 step 7), and each design keeps its own random streams from the same seed.
    The fast design runs with the training `settings` (compute.Settings)."""
    device = settings.device
    designs = {}
    for name, model in (("fast", fast), ("base", base)):
        model.remove_cluster_head()
        designs[name] = {"state": train_main.fresh_state(model, SEED, args.model_type),
                         "accounts": [], "last": None}
    for i in range(args.repeats + 1):
        for name, d in designs.items():
            state = d["state"]
            if name == "fast":
                fast_backends(settings)
                state.epoch = i
                res = fast_epoch(state, train, val, args.num_clusters, args.batch, settings, args.train_batches)
            else:
                original_backends(device)
                res = baseline_epoch(state.model, reader, train.norm_labels, val_reader, val.norm_labels,
                                     state.optimizers, args.num_clusters, args.batch, device, state.rng,
                                     state.triplet_gen, args.train_batches)
            log(f"  epoch {i} {'(warm-up) ' if i == 0 else ''}{name}: "
                + ", ".join(f"{s} {res['seconds'][s]:.2f}s" for s in EPOCH_STAGES))
            if i > 0:
                d["accounts"].append(epoch_accounting(res["seconds"], res["drawn"], res["trained"]))
            d["last"] = res
    fast_backends(settings)
    return {name: median_epoch(d["accounts"]) for name, d in designs.items()}, designs


def epoch_rows(epochs, n_train, n_val, n_chunks, args, prec):
    """Table rows of the epoch: the stage-derived rates, the epoch total and each stage."""
    fast, base = epochs["fast"], epochs["base"]
    rows = []
    cf = "chunk features"
    rows.append(row("chunk features (head off)", "chunks/s", n_chunks / fast["measured"][cf],
                    n_chunks / base["measured"][cf], precision=prec,
                    samples=[n_chunks / t for t in fast["stage_samples"][cf]],
                    baseline_samples=[n_chunks / t for t in base["stage_samples"][cf]]))
    rows.append(row(f"k-means ({n_chunks}x256, K={args.num_clusters})", "s", fast["measured"]["k-means"],
                    base["measured"]["k-means"], better="lower", precision=("fp32", "fp32"),
                    note="same faiss call in both designs; the baseline clusters its own fp32 features"))
    trained_chunks = fast["trained"] * CHUNKS_PER_TURN
    rows.append(row(f"joint training ({fast['trained']} turns)", "chunks/s",
                    trained_chunks / fast["measured"]["training"], trained_chunks / base["measured"]["training"],
                    precision=prec, samples=[trained_chunks / t for t in fast["stage_samples"]["training"]],
                    baseline_samples=[trained_chunks / t for t in base["stage_samples"]["training"]]))
    limited = ""
    if fast["limited"]:
        b_run = -(-fast["trained"] // args.batch)
        b_all = -(-fast["drawn"] // args.batch)
        limited = (f"TRAINING LIMITED (--train-batches {args.train_batches}): {b_run} of {b_all} batches "
                   f"timed, extrapolated x{fast['training_factor']:.2f} to the whole sampled epoch; "
                   f"measured epoch {fast['measured_total']:.2f} s vs baseline {base['measured_total']:.2f} s. ")
    shares = ", ".join(f"{s} {100 * fast['stages'][s] / fast['total']:.0f}%" for s in EPOCH_STAGES)
    base_shares = ", ".join(f"{100 * base['stages'][s] / base['total']:.0f}%" for s in EPOCH_STAGES)
    rows.append(row(f"ONE TRAINING EPOCH ({n_train} Train + {n_val} validation turns)"
                    + (" [training extrapolated]" if fast["limited"] else ""), "s", fast["total"], base["total"],
                    better="lower", precision=prec, samples=fast["samples"], baseline_samples=base["samples"],
                    note=f"{limited}sum of the stage medians below; where the time goes: {shares} "
                         f"(baseline: {base_shares})"))
    for s in EPOCH_STAGES:
        extra = " (extrapolated)" if s == "training" and fast["limited"] else ""
        rows.append(row(f"  epoch stage: {s}{extra}", "s", fast["stages"][s], base["stages"][s],
                        better="lower", precision=("fp32", "fp32") if s in ("k-means", "sampling") else prec))
    return rows


# Operator families of a training step, by the names torch.profiler gives them.
OP_FAMILIES = (("convolutions", ("convolution",)), ("BatchNorm", ("batch_norm",)),
               ("ReLU", ("relu", "threshold_backward", "clamp_min")))


def profile_training_step(step, device):
    """Shares (%) of one fast-path training batch's operator time by family (on CUDA the
    kernels' device time, on the CPU the operators' CPU time).

    This is the profile behind the encoder GFLOP/s figure: what is not convolution is
    memory-bound BatchNorm and ReLU passes over the large feature maps.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    totals = {name: 0.0 for name, _ in OP_FAMILIES}
    totals["other"] = 0.0
    for event in prof.key_averages():
        if getattr(event, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue      # a kernel: its time is already its launching operator's device time
        name = event.key.lower()
        family = next((f for f, keys in OP_FAMILIES if any(k in name for k in keys)), "other")
        if device.type == "cuda":
            t = getattr(event, "self_device_time_total", None)
            if t is None:     # torch before 2.4
                t = getattr(event, "self_cuda_time_total", 0.0)
        else:
            t = event.self_cpu_time_total
        totals[family] += t
    whole = sum(totals.values()) or 1.0
    return {family: 100.0 * t / whole for family, t in totals.items()}


# --- compile time of the encoder --------------------------------------------------------------
COMPILE_PROBE = (
    "import json, sys, time\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import torch, torch.nn.functional as F\n"
    "from model import build_model\n"
    "from deepemocluster.compute import autocast\n"
    "from utils import CHUNKS_PER_TURN, ccc_loss\n"
    "batch, mt, k, bf16, dev = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == '1', sys.argv[6]\n"
    "device = torch.device(dev)\n"
    "torch.manual_seed(0)\n"
    "model = build_model(mt, k).to(memory_format=torch.channels_last).to(device).train()\n"
    "model.compile_encoder()\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.001)\n"
    "x = torch.randn(batch, CHUNKS_PER_TURN, 62, 128, device=device)\n"
    "t = torch.randint(0, k, (batch * CHUNKS_PER_TURN,), device=device)\n"
    "y = torch.randn(batch * CHUNKS_PER_TURN, device=device)\n"
    "times = []\n"
    "for _ in range(3):\n"
    "    t0 = time.perf_counter()\n"
    "    with autocast(device, bf16):\n"
    "        c, a, _ = model(x)\n"
    "    loss = F.cross_entropy(c.float(), t) + ccc_loss(a, y)\n"
    "    opt.zero_grad(); loss.backward(); opt.step()\n"
    "    if device.type == 'cuda': torch.cuda.synchronize()\n"
    "    times.append(time.perf_counter() - t0)\n"
    "print(json.dumps({'first': times[0], 'steady': min(times[1:])}))\n")


def bench_compile_time(root, args, settings):
    """Seconds torch.compile adds to a process's first training batch (the first batch minus
    a steady one), with a cold and then a warm on-disk inductor cache: each run of main.py
    pays this once when it compiles the encoder (--compile)."""
    cache = os.path.join(root, "inductor_cache")
    out = {}
    for state in ("cold", "warm"):
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        done = subprocess.run([sys.executable, "-c", COMPILE_PROBE, ROOT, str(args.batch), args.model_type,
                               str(args.num_clusters), "1" if settings.bf16 else "0", str(settings.device)],
                              env=env, capture_output=True, text=True, check=True)
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        out[state] = max(probe["first"] - probe["steady"], 0.0)
    return out
