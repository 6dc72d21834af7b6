"""Item 8, the scale study: a corpus of N Train turns without audio; its cache build and read rates,
one epoch at N/M and at N turns in child processes, their peak memory and the disk used."""
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

import main as train_main
from bench import EMOTION, ENTRY, SEED
from bench.corpus import SYNTH_FRAMES, make_norm_term, scale_template, subset_labels, write_scale_corpus
from bench.epoch import EPOCH_STAGES, epoch_accounting, fast_epoch
from bench.machine import fast_precision, use_all_cores
from bench.measure import log
from bench.memory import peak_rss
from bench.report import row
from dataloader import TURN_SHAPE, ChunkCache, LabelledTurns, batches
from deepemocluster.features import load_norm_term
from deepemocluster.labels import feature_paths, read_labels, validation_split
from model import build_model
from deepemocluster.compute import (configure_backends, seed_everything, single_process, use_bf16, use_channels_last,
                                    use_compile)
from utils import CHUNKS_PER_TURN, N_MELS, TRAIN_SPLIT, atomic_path

# method §2: MSP-Podcast v1.12, the size the estimate is for.
V112_TRAIN = 112712
V112_DEVELOPMENT = 31961
ESTIMATE_EPOCHS = 30                      # method §6 default
CACHE_READ_TURNS = 4096                    # random turns read for the cache read rates


def dev_turns(n_train):
    """Development turns going with `n_train` Train turns, in the v1.12 proportion."""
    return max(1, round(n_train * V112_DEVELOPMENT / V112_TRAIN))


def cache_turn_bytes(dtype):
    return int(np.prod(TURN_SHAPE)) * np.dtype(dtype).itemsize


def evict_from_page_cache(path):
    """Ask the kernel to drop the file's pages (written back first), so the next read comes
    from the disk; advisory, and no privileges needed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cache_read_rate(cache, n_turns, batch, seed, cold, device):
    """Reading `n_turns` random turns (as a sampled epoch does) through dataloader.batches, for
    the run's `device` (pinned for a GPU, as training reads them): (turns/s, MB/s). Warm: read
    once before the timed pass; cold: pages dropped first."""
    order = np.random.default_rng(seed).choice(len(cache), size=min(n_turns, len(cache)), replace=False)
    if cold:
        evict_from_page_cache(cache.path)
    else:
        for _ in batches(cache, order, batch, device=device):
            pass
    t0 = time.perf_counter()
    for _ in batches(cache, order, batch, device=device):
        pass
    seconds = time.perf_counter() - t0
    return len(order) / seconds, len(order) * cache.turn_bytes / seconds / 1e6


def folder_bytes(paths):
    return sum(os.path.getsize(p) for p in paths)


def epoch_child(spec_path):
    """Internal (--epoch-child SPEC_JSON): in a fresh process, what main.py does before and in its
    first epoch at one corpus size: build the chunk caches, then one epoch through main.py's
    functions, training over at most spec['train_batches'] batches. Writes a JSON result."""
    with open(spec_path) as f:
        spec = json.load(f)
    use_all_cores()
    settings = single_process(spec["device"], spec["precision"])
    device = settings.device
    configure_backends(device)
    seed_everything(SEED)
    norm = load_norm_term(spec["norm_dir"], (EMOTION,))
    val_split = validation_split(spec["labels"])
    t0 = time.perf_counter()
    train = LabelledTurns(TRAIN_SPLIT, spec["labels"], spec["features"], norm, EMOTION, spec["cache_dir"],
                          spec["cache_dtype"])
    t_train_cache = time.perf_counter() - t0
    t0 = time.perf_counter()
    val = LabelledTurns(val_split, spec["labels"], spec["features"], norm, EMOTION, spec["cache_dir"],
                        spec["cache_dtype"])
    t_val_cache = time.perf_counter() - t0
    model = build_model(spec["model_type"], spec["clusters"])
    if use_channels_last(spec["precision"]):
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if spec["compile"]:
        model.compile_encoder()
    model.remove_cluster_head()
    state = train_main.fresh_state(model, SEED, spec["model_type"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    res = fast_epoch(state, train, val, spec["clusters"], spec["batch"], settings, spec["train_batches"],
                     warmup_batch=bool(spec["compile"] or spec["train_batches"]))
    out = {"n_train": len(train), "n_dev": len(val), "cache_path": train.cache.path,
           "val_cache_path": val.cache.path, "train_cache_seconds": t_train_cache,
           "val_cache_seconds": t_val_cache, "account": epoch_accounting(res["seconds"], res["drawn"], res["trained"]),
           "train_loss": res["train_loss"], "val_loss": res["val_loss"], "compiled": bool(spec["compile"]),
           "warmup_seconds": res["seconds"].get("training warm-up"),
           "precision": fast_precision(settings),
           "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    with atomic_path(spec["out"]) as tmp:
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def run_epoch_child(work, tag, labels, features, norm_dir, cache_dir, args, batch, compiled):
    spec = {"labels": labels, "features": features, "norm_dir": norm_dir, "cache_dir": cache_dir,
            "compile": compiled,
            "cache_dtype": args.cache_dtype, "model_type": args.model_type, "clusters": args.num_clusters,
            "batch": batch, "train_batches": args.scale_train_batches, "device": args.device,
            "precision": args.precision, "out": os.path.join(work, f"{tag}_result.json")}
    spec_path = os.path.join(work, f"{tag}_spec.json")
    os.makedirs(work, exist_ok=True)
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    rss, seconds = peak_rss([sys.executable, ENTRY, "--epoch-child", spec_path], work, tag)
    with open(spec["out"]) as f:
        result = json.load(f)
    result.update(rss_mib=rss, wall_seconds=seconds)
    return result


def scale_sizes(n, multiple, n_clusters):
    """Train-turn counts of the scale runs: N/multiple (at least enough chunks for K) and N."""
    small = max(-(-n // multiple), -(-n_clusters // CHUNKS_PER_TURN), 1)
    return [small, n] if small < n else [n]


def check_disk(folder, needed):
    free = shutil.disk_usage(folder).free
    if needed > 0.9 * free:
        raise SystemExit(f"error: the scale run needs about {needed / 1e9:.1f} GB in {folder}, which has "
                         f"{free / 1e9:.1f} GB free; give a smaller --scale-turns or another --workdir")


def scale_study(corpus, args, device):
    """Item 8: a corpus of N Train turns without audio, measured as the package docstring (item 8) says."""
    n = args.scale_turns
    source = args.scale_source
    if source == "auto":
        source = "synthetic" if n > args.turns or args.scale_only else "copies"
    sizes = scale_sizes(n, args.scale_multiple, args.num_clusters)
    root = os.path.join(corpus.root, "scale")
    os.makedirs(root, exist_ok=True)
    n_dev = dev_turns(n)
    other = "float16" if args.cache_dtype == "float32" else "float32"
    mean_frames = sum(SYNTH_FRAMES) / 2
    needed = ((n + n_dev) * (mean_frames * N_MELS * 4 + 512)          # features
              + (n + n_dev) * cache_turn_bytes(args.cache_dtype)        # the caches of the run at N
              + n * cache_turn_bytes(other))                            # the other dtype's, for a while
    check_disk(root, needed)
    out = {"source": source, "n_train": n, "n_dev": n_dev, "sizes": sizes, "cache_dtype": args.cache_dtype}

    log(f"8 scale: writing {n} Train + {n_dev} Development turns of {source} features")
    t0 = time.perf_counter()
    template = scale_template(corpus) if source == "copies" else None
    labels, feats, rows = write_scale_corpus(root, n, n_dev, source, seed=SEED, template=template)
    out["write_seconds"] = time.perf_counter() - t0
    mats = [os.path.join(feats, r["FileName"][:-4] + ".mat") for r in rows]
    out["feature_bytes_train"] = folder_bytes(mats[:n])
    out["feature_bytes_dev"] = folder_bytes(mats[n:])
    if source == "synthetic":
        out["mean_frames"] = mean_frames
    norm_dir = os.path.join(root, "NormTerm")
    t0 = time.perf_counter()
    make_norm_term(labels, feats, norm_dir)
    out["norm_seconds"] = time.perf_counter() - t0

    cache_dir = os.path.join(root, "cache")
    # Compiled as main.py would compile a 30-epoch run (method §6) at N, at both sizes alike.
    compiled = use_compile(args.compile, device, args.precision, ESTIMATE_EPOCHS * (n // args.rss_batch),
                           use_bf16(args.precision, device))
    out["compiled"] = compiled
    runs = []
    for k in sizes:
        k_dev = dev_turns(k) if k < n else n_dev
        csv_k = labels if k == n else subset_labels(rows, os.path.join(root, "Labels", f"labels_{k}.csv"),
                                                    k, k_dev)
        log(f"8 scale: one epoch at {k} Train + {k_dev} Development turns (child process; training over "
            f"{args.scale_train_batches or 'all'} batches)")
        result = run_epoch_child(os.path.join(root, "runs"), f"n{k}", csv_k, feats, norm_dir, cache_dir,
                                 args, args.rss_batch, compiled)
        log(f"  peak RSS {result['rss_mib']:.0f} MiB; "
            + ", ".join(f"{s} {result['account']['stages'][s]:.1f}s" for s in EPOCH_STAGES))
        runs.append(result)
        if k < n:       # the smaller run's caches are not needed again: free the disk
            for path in (result["cache_path"], result["val_cache_path"]):
                for p in (path, path[:-len(".npy")] + ".json"):
                    if os.path.isfile(p):
                        os.remove(p)
    out["runs"] = runs
    big = runs[-1]
    out["cache_bytes"] = {args.cache_dtype: os.path.getsize(big["cache_path"])}
    out["cache_build_rate"] = {args.cache_dtype: big["n_train"] / big["train_cache_seconds"]}

    log(f"8 scale: the {other} Train cache (for its build rate and size)")
    norm = load_norm_term(norm_dir)
    stems, _ = read_labels(labels, TRAIN_SPLIT)
    t0 = time.perf_counter()
    other_cache = ChunkCache.open_or_build(os.path.join(root, "cache_other"), TRAIN_SPLIT,
                                           feature_paths(feats, stems), norm["features"], other)
    out["cache_build_rate"][other] = n / (time.perf_counter() - t0)
    out["cache_bytes"][other] = os.path.getsize(other_cache.path)
    del other_cache
    shutil.rmtree(os.path.join(root, "cache_other"), ignore_errors=True)

    log("8 scale: chunk-cache read rates (random turns)")
    cache = ChunkCache(big["cache_path"])
    n_read = min(CACHE_READ_TURNS, len(cache))
    out["cache_read"] = {"turns": n_read,
                         "warm": cache_read_rate(cache, n_read, args.rss_batch, SEED, False, device),
                         "cold": cache_read_rate(cache, n_read, args.rss_batch, SEED + 1, True, device)}
    return out


def scale_rows(scale, args):
    """Table rows of item 8."""
    rows = []
    n, n_dev, runs = scale["n_train"], scale["n_dev"], scale["runs"]
    big = runs[-1]
    tr_prec = (big["precision"], None)
    per_turn_kb = scale["feature_bytes_train"] / n / 1e3
    rows.append(row(f"scale: {n}+{n_dev} turns of {scale['source']} .mat features written", "turns/s",
                    (n + n_dev) / scale["write_seconds"], precision="-",
                    note=f"{per_turn_kb:.0f} kB per Train turn on disk"
                         + (f" (mean {scale['mean_frames']:.0f} frames, 2.75-11 s)" if "mean_frames" in scale else "")))
    rows.append(row(f"scale: NormTerm over {n} Train turns (once per corpus)", "turns/s",
                    n / scale["norm_seconds"], precision="-"))
    for dtype, r in scale["cache_build_rate"].items():
        rows.append(row(f"scale: chunk cache build, {n} Train turns, {dtype}", "turns/s", r, precision="-",
                        note="in the epoch child process" if dtype == args.cache_dtype else "in this process"))
    cr = scale["cache_read"]
    for kind, label in (("warm", "page cache"), ("cold", "cold: pages dropped first")):
        rows.append(row(f"scale: chunk cache read, {cr['turns']} random turns, {label}", "turns/s", cr[kind][0],
                        precision="-", note=f"{cr[kind][1]:.0f} MB/s of {scale['cache_dtype']} chunks; feeds up "
                                            f"to {cr[kind][0] * CHUNKS_PER_TURN:,.0f} chunks/s"))
    acc = big["account"]
    prefix = f"scale: epoch at {big['n_train']}+{big['n_dev']} turns"
    for s in EPOCH_STAGES:
        note = ""
        if s == "training":
            if acc["limited"]:
                b_run = -(-acc["trained"] // args.rss_batch)
                b_all = -(-acc["drawn"] // args.rss_batch)
                note = (f"EXTRAPOLATED from {b_run} of {b_all} batches ({acc['measured']['training']:.1f} s "
                        f"measured, x{acc['training_factor']:.1f}); ")
            if big.get("warmup_seconds") is not None:
                note += (f"after one warm-up batch ({big['warmup_seconds']:.1f} s"
                         f"{', compiling the encoder' if big.get('compiled') else ''}; not counted); ")
            note += f"{acc['trained'] * CHUNKS_PER_TURN / acc['measured']['training']:,.0f} chunks/s"
        elif s == "chunk features":
            note = f"{big['n_train'] * CHUNKS_PER_TURN / acc['stages'][s]:,.0f} chunks/s"
        if len(runs) > 1 and s != "sampling":
            small = runs[0]
            count = (lambda r: r["n_dev"]) if s == "validation" else (lambda r: r["n_train"])
            ratio_note = (f"per turn at {small['n_train']} turns: {1e3 * small['account']['stages'][s] / count(small):.2f} ms, "
                          f"at {big['n_train']}: {1e3 * acc['stages'][s] / count(big):.2f} ms")
            note = f"{note}; {ratio_note}" if note else ratio_note
        rows.append(row(f"{prefix}: {s}", "s", acc["stages"][s], better="lower",
                        precision=("fp32", None) if s in ("k-means", "sampling") else tr_prec, note=note))
    rows.append(row(f"{prefix}: total", "s", acc["total"], better="lower", precision=tr_prec,
                    note=f"one cold epoch in a fresh process (batch {args.rss_batch}), main.py's functions; "
                         f"cache build not included"))
    for r in runs:
        base = runs[0]["rss_mib"] if r is not runs[0] else None
        note = ""
        if base is not None:
            growth = (r["rss_mib"] - base) / (r["n_train"] - runs[0]["n_train"]) * 1024
            note = (f"'-' ratio: this run / the {runs[0]['n_train']}-turn run; {growth:.1f} KiB more per Train "
                    f"turn (the k-means input alone is {CHUNKS_PER_TURN * 256 * 4 / 1024:.0f} KiB per turn)")
        rows.append(row(f"scale: peak RSS, epoch at {r['n_train']} Train turns (batch {args.rss_batch})", "MiB",
                        r["rss_mib"], base, better="-", precision=tr_prec, note=note))
        if r.get("gpu_peak_mib") is not None:
            rows.append(row(f"scale: GPU peak memory, epoch at {r['n_train']} turns", "MiB", r["gpu_peak_mib"],
                            better="-", precision=tr_prec))
    rows.append(row(f"scale: disk, feature files ({n}+{n_dev} turns)", "MiB",
                    (scale["feature_bytes_train"] + scale["feature_bytes_dev"]) / 2**20, better="-", precision="-"))
    for dtype, b in scale["cache_bytes"].items():
        rows.append(row(f"scale: disk, Train chunk cache {dtype} ({n} turns)", "MiB", b / 2**20, better="-",
                        precision="-", note=f"{b / n / 1e3:.0f} kB per turn"))
    return rows
