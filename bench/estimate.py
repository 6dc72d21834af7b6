"""The estimate for MSP-Podcast v1.12 on this machine, extrapolated per turn from the largest scale
run: disk, memory, time per epoch by stage, and what a GPU must be fed per second."""
from bench.epoch import EPOCH_STAGES
from bench.scale import ESTIMATE_EPOCHS, V112_DEVELOPMENT, V112_TRAIN, cache_turn_bytes
from utils import CHUNKS_PER_TURN

RSS_GROWTH_RESOLVED = 64 * 2**20           # k-means input growth between the scale runs that RSS resolves


def gpu_feed(rate_chunks):
    """What a GPU training at `rate_chunks` chunks/s reads from the chunk cache per second."""
    return {"chunks_per_s": rate_chunks, "turns_per_s": rate_chunks / CHUNKS_PER_TURN,
            "mb_per_s": {d: rate_chunks * cache_turn_bytes(d) / CHUNKS_PER_TURN / 1e6 for d in ("float32", "float16")}}


def v112_estimate(scale, info, args, gpu_rate=None, gpu_rate_source=None):
    """MSP-Podcast v1.12 on this machine, extrapolated linearly per turn from the largest scale run."""
    n_tr, n_dev = V112_TRAIN, V112_DEVELOPMENT
    runs = scale["runs"]
    big = runs[-1]
    acc = big["account"]
    stages = {s: acc["stages"][s] / big["n_train"] * n_tr for s in EPOCH_STAGES if s != "validation"}
    stages["validation"] = acc["stages"]["validation"] / big["n_dev"] * n_dev
    feat_per_turn = scale["feature_bytes_train"] / scale["n_train"]
    est = {"train_turns": n_tr, "development_turns": n_dev, "from_turns": big["n_train"],
           "epoch_stages_s": stages, "epoch_s": sum(stages.values()),
           "epochs": ESTIMATE_EPOCHS, "training_s": ESTIMATE_EPOCHS * sum(stages.values()),
           "training_extrapolated_from_batches": acc["limited"],
           "disk_features_bytes": feat_per_turn * (n_tr + n_dev),
           "disk_cache_bytes": {d: cache_turn_bytes(d) * (n_tr + n_dev) for d in ("float32", "float16")},
           "cache_build_s": {d: (n_tr + n_dev) / r for d, r in scale["cache_build_rate"].items()}}
    kmeans_input = CHUNKS_PER_TURN * 256 * 4
    growth = kmeans_input
    if len(runs) > 1:
        delta = big["n_train"] - runs[0]["n_train"]
        measured = (big["rss_mib"] - runs[0]["rss_mib"]) * 2**20 / delta
        est["rss_growth_bytes_per_turn_measured"] = measured
        # Below some 64 MiB of expected growth, allocator and page noise hides the per-turn cost.
        est["rss_growth_resolved"] = delta * kmeans_input >= RSS_GROWTH_RESOLVED
        if est["rss_growth_resolved"]:
            growth = max(measured, kmeans_input)
    cluster_log = 2 * ESTIMATE_EPOCHS * n_tr * CHUNKS_PER_TURN * 4    # held, and stacked when saved
    est["rss_bytes"] = big["rss_mib"] * 2**20 + growth * (n_tr - big["n_train"]) + cluster_log
    est["rss_growth_bytes_per_turn_used"] = growth
    est["cluster_log_bytes"] = cluster_log
    mem = (info.get("memory_gib") or 0) * 2**30
    est["train_cache_exceeds_memory"] = bool(mem) and cache_turn_bytes(args.cache_dtype) * n_tr > mem
    est["cache_read_turns_per_s"] = {k: v[0] for k, v in scale["cache_read"].items() if k in ("warm", "cold")}
    if gpu_rate:
        est["gpu_feed"] = dict(gpu_feed(gpu_rate), source=gpu_rate_source)
    return est


def hms(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def estimate_lines(est, scale, info, args):
    gb = 1e9
    cap = info["cpu_capability"] + (" (emulated)" if info["cpu_isa_emulation"] else "")
    lines = [f"estimate for MSP-Podcast v1.12 ({est['train_turns']:,} Train, {est['development_turns']:,} "
             f"Development turns) on this machine ({cap}, device {info['device']}), extrapolated per turn from "
             f"the {est['from_turns']:,}-turn run ({scale['source']} features):"]
    mean = f" at the synthetic mean of {scale['mean_frames']:.0f} frames (6.9 s); scale by your mean duration" \
        if "mean_frames" in scale else ""
    lines.append(f"  disk    : features {est['disk_features_bytes'] / gb:.1f} GB (Train + Development{mean}); "
                 f"chunk cache {est['disk_cache_bytes']['float32'] / gb:.1f} GB float32, "
                 f"{est['disk_cache_bytes']['float16'] / gb:.1f} GB float16 (--cache-dtype float16); "
                 "the cache bytes per turn are fixed (11 x 62 x 128)")
    builds = ", ".join(f"{d} {hms(s)}" for d, s in est["cache_build_s"].items())
    lines.append(f"  once    : chunk cache build {builds}")
    measured = est.get("rss_growth_bytes_per_turn_measured")
    lines.append(f"  memory  : peak RSS about {est['rss_bytes'] / 2**30:.1f} GiB: the {est['from_turns']:,}-turn run "
                 f"+ {est['rss_growth_bytes_per_turn_used'] / 1024:.1f} KiB per further Train turn ("
                 + ((f"measured {measured / 1024:.1f}; " if est["rss_growth_resolved"] else
                     f"measured {measured / 1024:.1f}, but the runs are too close in size to resolve it; ")
                    if measured is not None else "")
                 + f"the k-means input is {CHUNKS_PER_TURN * 256 * 4 / 1024:.0f}) + main.py's cluster log after "
                 f"{est['epochs']} epochs ({est['cluster_log_bytes'] / 2**30:.2f} GiB, held and stacked)")
    st = est["epoch_stages_s"]
    lines.append("  epoch   : " + ", ".join(f"{s} {hms(st[s])}" for s in EPOCH_STAGES)
                 + f"; total {hms(est['epoch_s'])} per epoch, {hms(est['training_s'])} for {est['epochs']} epochs"
                 + (" (training stage extrapolated from a limited number of batches)"
                    if est["training_extrapolated_from_batches"] else ""))
    rd = est["cache_read_turns_per_s"]
    if est["train_cache_exceeds_memory"]:
        lines.append(f"  cache   : the {args.cache_dtype} Train cache "
                     f"({cache_turn_bytes(args.cache_dtype) * est['train_turns'] / gb:.0f} GB) is larger than this "
                     f"machine's memory: training reads it from disk (measured cold: {rd['cold']:,.0f} turns/s, "
                     f"page cache: {rd['warm']:,.0f} turns/s)")
    per32 = cache_turn_bytes("float32") / CHUNKS_PER_TURN / 1e3
    per16 = cache_turn_bytes("float16") / CHUNKS_PER_TURN / 1e3
    lines.append(f"  GPU feed: a GPU training at R chunks/s reads R/11 turns/s and R x {per32:.1f} kB/s from a float32 "
                 f"cache (R x {per16:.1f} kB/s float16); this machine's cache reads supply up to "
                 f"{rd['warm'] * CHUNKS_PER_TURN:,.0f} chunks/s from the page cache, {rd['cold'] * CHUNKS_PER_TURN:,.0f} "
                 "cold (one reader thread, as dataloader.batches)")
    feed = est.get("gpu_feed")
    if feed:
        lines.append(f"            at R = {feed['chunks_per_s']:,.0f} chunks/s ({feed['source']}): "
                     f"{feed['turns_per_s']:,.0f} turns/s, {feed['mb_per_s']['float32']:,.0f} MB/s float32 or "
                     f"{feed['mb_per_s']['float16']:,.0f} MB/s float16")
    else:
        lines.append("            (no GPU rate: run with --device cuda, or give --gpu-train-rate R from such a run)")
    return lines
