"""The command line and the whole run: flags, items 1-7 on the generated corpus, item 8, the report."""
import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile

import torch

import bench
import feat_extract
import main as train_main
from bench import EMOTION, SEED
from bench.baseline import PerChunkReader, model_pair
from bench.corpus import Corpus, make_corpus, make_norm_term
from bench.estimate import estimate_lines, v112_estimate
from bench.extraction import bench_cache_build, bench_features, feature_folder
from bench.inference import bench_online_testing, bench_prediction
from bench.machine import (EMULATION_MARK, ISA_EMULATION, baseline_precision, bench_matmul, fast_backends,
                           fast_precision, machine_info, rerun_with_isa, use_all_cores)
from bench.measure import log
from bench.memory import training_peak_rss
from bench.report import header_lines, row, table_lines, write_json
from bench.scale import ESTIMATE_EPOCHS, epoch_child, scale_rows, scale_study
from bench.training import bench_compile_time, bench_epochs, epoch_rows, profile_training_step
from bench.turns import bench_turns, turns_peak_rss
from dataloader import LabelledTurns
from deepemocluster.labels import feature_paths, read_labels, validation_split
from deepemocluster.compute import (inference_settings, pick_device, single_process, use_channels_last,
                                    use_compile)
from utils import CHUNKS_PER_TURN, TEMPORAL_TYPES, TRAIN_SPLIT, at_least

# method §5: encoder cost per chunk, forward; a training step is about 3× the forward.
GFLOP_PER_CHUNK_FORWARD = 0.29
TRAIN_STEP_FACTOR = 3.0
QUICK = {"turns": 8, "batch": 4, "repeats": 1, "train_batches": 2, "matmul": 256, "rss_batch": 4,
         "feature_files": 16, "scale_train_batches": 2, "predict_files": 3, "turns_minutes": 1}
FULL = {"turns": 480, "batch": 64, "repeats": 3, "train_batches": 0, "matmul": 2048, "rss_batch": None,
        "feature_files": 2000, "scale_train_batches": 16, "predict_files": 500, "turns_minutes": 10}


# --- command line ---------------------------------------------------------------------------
def count_flag(parser, flag, minimum, default, help):
    """A whole-number flag of at least `minimum`; a default of None is filled in after parsing,
    from the --quick or the full preset or from another flag."""
    parser.add_argument(flag, type=at_least(minimum, flag), default=default, help=help)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke run (8 turns, batch 4, 1 repeat, 2 training batches)")
    count_flag(p, "--turns", 2, None, "Train turns of the generated corpus (default 480; 8 with --quick)")
    count_flag(p, "--batch", 1, None, "turns per batch (default 64; 4 with --quick)")
    p.add_argument("-mt", "--model_type", choices=TEMPORAL_TYPES, default="Temp-Triplet",
                   help="temporal modelling (default Temp-Triplet)")
    p.add_argument("-nc", "--num_clusters", type=at_least(2, "-nc"), default=10,
                   help="k-means clusters K (default 10)")
    count_flag(p, "--repeats", 1, None,
               "timed repeats after the warm-up; the median is reported (default 3; 1 with --quick)")
    count_flag(p, "--workers", 1, 2, "processes for the parallel feature-extraction and prediction rows (default 2)")
    count_flag(p, "--feature-files", 1, None,
               "WAV files of the feature-extraction rows (default 2000; 16 with --quick)")
    count_flag(p, "--predict-files", 1, None, "files of the end-to-end prediction rows (default 500; 3 with --quick)")
    count_flag(p, "--turns-minutes", 1, None,
               "minutes of the long demo recording of the speaking-turn rows (default 10; 1 with --quick)")
    count_flag(p, "--turns-long-minutes", 0, 0,
               "also the peak RSS of --turns vad on a recording this long (copies of the --turns-minutes "
               "one; e.g. 120), beside that of the --turns-minutes one; default 0: neither")
    count_flag(p, "--train-batches", 0, None,
               "training batches per timed epoch, the rest extrapolated; 0 = the whole sampled "
               "epoch (default 0; 2 with --quick)")
    count_flag(p, "--matmul-size", 16, None,
               "side of the square matrices of the matmul rates (default 2048; 256 with --quick)")
    count_flag(p, "--scale-turns", 0, None,
               "N, the Train turns of the scale corpus (default --turns); 0 leaves item 8 out")
    p.add_argument("--scale-only", action="store_true",
                   help="only item 8 (no demo corpus, no items 1-7; synthetic scale features)")
    p.add_argument("--scale-source", choices=("auto", "copies", "synthetic"), default="auto",
                   help="scale corpus features: copies of the generated corpus's, or synthetic mel features "
                        "written as .mat files; auto (default): synthetic when N > --turns")
    count_flag(p, "--scale-multiple", 1, 4, "the scale runs are at N/M and at N Train turns (default M = 4)")
    count_flag(p, "--scale-train-batches", 0, None,
               "training batches of the scale epochs, extrapolated to the epoch; 0 = all "
               "(default 16; 2 with --quick)")
    count_flag(p, "--rss-batch", 1, None, "batch of the scale runs (default --batch)")
    p.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="chunk-cache dtype of the scale runs, as main.py's --cache-dtype (default float32)")
    p.add_argument("--gpu-train-rate", type=float, default=None, metavar="CHUNKS_PER_S",
                   help="a GPU's training rate (chunks/s, from a --device cuda run elsewhere) for the GPU-feed "
                        "estimate; with --device cuda the measured rate is used")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="precision of the fast path, as in the scripts (default auto)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="main.py's --compile for the fast path's training; auto decides as main.py would "
                        "for a 30-epoch run of the corpus (default auto)")
    p.add_argument("--cpu-isa", choices=("native",) + tuple(ISA_EMULATION), default="native",
                   help="cap the CPU instruction set: avx2 measures an AVX2-only CPU here (oneDNN, ATen, MKL, "
                        "OpenBLAS, numpy and faiss capped; bench.py runs again in a child process with them); "
                        "default native")
    p.add_argument("--info-only", action="store_true",
                   help="print the header (machine, CPU capability) and write --json, then stop")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--workdir", default=None,
                   help="folder in which a fresh bench_* work folder is made (default the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--epoch-child", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, flag in (("turns", "turns"), ("batch", "batch"), ("repeats", "repeats"),
                      ("train_batches", "train_batches"), ("matmul", "matmul_size"),
                      ("rss_batch", "rss_batch"), ("feature_files", "feature_files"),
                      ("scale_train_batches", "scale_train_batches"), ("predict_files", "predict_files"),
                      ("turns_minutes", "turns_minutes")):
        if getattr(args, flag) is None:
            setattr(args, flag, preset[key])
    if args.rss_batch is None:
        args.rss_batch = args.batch
    if args.scale_turns is None:
        args.scale_turns = args.turns
    if args.scale_only and args.scale_source == "copies":
        p.error("--scale-only makes no demo corpus to copy: use --scale-source synthetic")
    if args.scale_only and not args.scale_turns:
        p.error("--scale-only needs --scale-turns N of at least 1")
    for flag, n in (("--turns", args.turns), ("--scale-turns", args.scale_turns)):
        if n and n * CHUNKS_PER_TURN < args.num_clusters:
            p.error(f"{flag} {n} gives too few chunks for -nc {args.num_clusters}")
    return args


def bench_pipeline(corpus, args, training, inference, channels_last):
    """Items 1-7 and 9 on the generated corpus, the fast path with the Settings of `training` and
    of `inference`: (rows, extra)."""
    rows = []
    device = training.device
    train_prec, infer_prec = fast_precision(training), fast_precision(inference)
    base_prec = baseline_precision(device)

    log("1 feature extraction")
    feats = bench_features(feature_folder(corpus, args.feature_files),
                           os.path.join(corpus.root, "feature_out"), args.workers, args.repeats, device)
    one = feats[1]
    rows.append(row(f"feature extraction, 1 worker ({args.feature_files} files)", "turns/s", one[0],
                    one[0], samples=one[1], precision="-"))
    if args.workers > 1:
        par = feats[args.workers]
        rows.append(row(f"feature extraction, {args.workers} workers", "turns/s", par[0], one[0],
                        samples=par[1], precision="-", note="baseline column here: one worker"))
    with contextlib.redirect_stdout(io.StringIO()):
        feat_extract.extract_folder(corpus.audio, corpus.features, args.workers)
    norm = make_norm_term(corpus.labels, corpus.features, corpus.norm_dir)
    val_split = validation_split(corpus.labels)
    stems, _ = read_labels(corpus.labels, TRAIN_SPLIT, (EMOTION,))
    reader = PerChunkReader(feature_paths(corpus.features, stems), norm["features"])
    val_stems, _ = read_labels(corpus.labels, val_split, (EMOTION,))
    val_reader = PerChunkReader(feature_paths(corpus.features, val_stems), norm["features"])

    log("chunk cache build")
    build = bench_cache_build(corpus, norm, args.repeats, device)
    rows.append(row("chunk cache build (once per run)", "turns/s", build[0], samples=build[1], precision="-",
                    note="no baseline: the original had no cache; the epoch and online testing read it"))
    train = LabelledTurns(TRAIN_SPLIT, corpus.labels, corpus.features, norm, EMOTION, corpus.cache_dir)
    val = LabelledTurns(val_split, corpus.labels, corpus.features, norm, EMOTION, corpus.cache_dir)

    log(f"2 training epochs, stage by stage (warm-up + {args.repeats} per design)")
    fast, base = model_pair(args.model_type, args.num_clusters, device, channels_last, SEED)
    if args.compiled:      # as main.py: compiled once, in the warm-up epoch (not timed)
        fast.compile_encoder()
    epochs, designs = bench_epochs(fast, base, train, val, reader, val_reader, args, training)
    n_chunks = len(train) * CHUNKS_PER_TURN
    rows += epoch_rows(epochs, len(train), len(val), n_chunks, args, (train_prec, base_prec))
    last = designs["fast"]["last"]
    shares = profile_training_step(lambda: train_main.train_one_epoch(
        designs["fast"]["state"], train.cache, last["turns"][:args.batch], last["assignment"], args.batch,
        training, train.norm_labels), device)
    for family, share in shares.items():
        note = ""
        if family == "other":
            note = (f"torch.profiler ({'CUDA kernel' if device.type == 'cuda' else 'CPU'} time), one fast-path "
                    "batch" + ("; the encoder is compiled, so its BatchNorm and ReLU run inside fused kernels "
                               "counted here" if args.compiled else ""))
        rows.append(row(f"training step time in {family}", "%", share, better="-", precision=train_prec,
                        note=note))

    compile_s = None
    if args.compiled:
        log("encoder compilation time (child processes, cold and warm cache)")
        compile_s = bench_compile_time(corpus.root, args, training)
        fast_total, base_total = epochs["fast"]["total"], epochs["base"]["total"]
        amortised = ", ".join(f"{n}-epoch run {base_total / (fast_total + compile_s['cold'] / n):.2f}x"
                              for n in (10, 30))
        rows.append(row("encoder compilation, once per process (cold / warm cache)", "s", compile_s["cold"],
                        better="lower", precision=train_prec,
                        note=f"warm on-disk cache: {compile_s['warm']:.1f} s; the epoch ratio with a cold "
                             f"compilation spread over the run: {amortised}"))

    log("3 online testing")
    ot = bench_online_testing(corpus, args, inference, args.repeats)
    rows.append(row("online testing, warm cache", "turns/s", ot["warm"][0], ot["base"][0],
                    samples=ot["warm"][1], baseline_samples=ot["base"][1], precision=(infer_prec, base_prec)))
    rows.append(row("online testing, cold cache", "turns/s", ot["cold"][0], ot["base"][0],
                    samples=ot["cold"][1], baseline_samples=ot["base"][1], precision=(infer_prec, base_prec),
                    note=f"includes building the Test1 cache; Test1 CCC fast {ot['ccc_fast']:.4f} vs "
                         f"baseline {ot['ccc_base']:.4f}, max prediction difference "
                         f"{ot['max_pred_diff']:.2e}"))

    log("4 end-to-end prediction")
    pr = bench_prediction(corpus, args, inference, args.repeats)
    rows.append(row("prediction, 3 models, 1 worker", "files/s", pr[1][0], pr["base"][0],
                    samples=pr[1][1], baseline_samples=pr["base"][1], precision=(infer_prec, base_prec),
                    note=f"max score difference to the baseline {pr['max_pred_diff']:.2e}"))
    if args.workers > 1:
        rows.append(row(f"prediction, 3 models, {args.workers} workers", "files/s",
                        pr[args.workers][0], pr["base"][0], samples=pr[args.workers][1],
                        baseline_samples=pr["base"][1], precision=(infer_prec, base_prec)))
    rows.append(row("prediction, 3 models, 1 worker, ONNX Runtime CPU", "files/s", pr["onnx"][0], pr[1][0],
                    samples=pr["onnx"][1], baseline_samples=pr[1][1], precision=("fp32", infer_prec),
                    note="baseline column here: the PyTorch fast path, 1 worker (same models, export_onnx.py); "
                         f"max score difference to it {pr['onnx_max_diff']:.2e}"))

    log("9 speaking turns (--turns vad)")
    tu = bench_turns(corpus, args, inference, args.repeats)
    rows.append(row(f"speaking turns: the detector alone ({args.turns_minutes}-min recording)", "h audio/min",
                    tu["detector"][0], samples=tu["detector"][1], precision="fp32",
                    note="Silero VAD through ONNX Runtime, one thread, reading the WAV in blocks"))
    rows.append(row(f"speaking turns: whole prediction, 1 worker ({args.turns_minutes}-min recording)",
                    "h audio/min", tu["prediction"][0], samples=tu["prediction"][1], precision=infer_prec,
                    note=f"{tu['turns']} turns; the detector takes {100 * tu['share']:.1f}% of the time"))
    rss_turns = turns_peak_rss(corpus, tu["wav"], args.turns_long_minutes) if args.turns_long_minutes else {}
    for minutes, (mib, seconds) in rss_turns.items():
        rows.append(row(f"speaking turns: peak RSS, {minutes:.0f}-min recording", "MiB", mib, better="-",
                        precision="fp32", note=f"prediction_process.py --turns vad (the shipped demo models) "
                                               f"in a child process, {seconds:.0f}s"))

    log("7 matmul rates")
    mm32 = bench_matmul(args.matmul_size, torch.float32, device, args.repeats)
    mm16 = bench_matmul(args.matmul_size, torch.bfloat16, device, args.repeats)

    log("6 encoder GFLOP/s")
    per_chunk = GFLOP_PER_CHUNK_FORWARD * TRAIN_STEP_FACTOR
    tr_fast = epochs["fast"]["trained"] * CHUNKS_PER_TURN / epochs["fast"]["measured"]["training"]
    tr_base = epochs["base"]["trained"] * CHUNKS_PER_TURN / epochs["base"]["measured"]["training"]
    peak = mm16[0] if training.bf16 else mm32[0]
    rows.append(row("encoder in training", "GFLOP/s", tr_fast * per_chunk, tr_base * per_chunk,
                    precision=(train_prec, base_prec),
                    note=f"{100 * tr_fast * per_chunk / peak:.0f}% of the {train_prec} matmul rate "
                         f"(baseline {100 * tr_base * per_chunk / mm32[0]:.0f}% of fp32)"))
    rows.append(row(f"matmul fp32 {args.matmul_size}^2", "GFLOP/s", mm32[0], samples=mm32[1], precision="fp32"))
    rows.append(row(f"matmul bf16 {args.matmul_size}^2", "GFLOP/s", mm16[0], mm32[0], samples=mm16[1],
                    precision="bf16", note="baseline column here: the fp32 rate"))

    log("5 peak memory of a main.py training run (child process)")
    rss, rss_s = training_peak_rss(corpus, args, args.batch)
    rows.append(row(f"training peak RSS (main.py, 1 epoch, batch {args.batch})", "MiB", rss, better="-",
                    precision=train_prec, note=f"main.py in a child process, {rss_s:.0f}s"))

    extra = {"epochs": epochs,
             "training_loss_fast": designs["fast"]["last"]["train_loss"],
             "training_loss_baseline": designs["base"]["last"]["train_loss"],
             "online_testing": {k: ot[k] for k in ("ccc_fast", "ccc_base", "max_pred_diff", "turns")},
             "prediction_max_diff": pr["max_pred_diff"],
             "prediction_onnx_max_diff": pr["onnx_max_diff"], "training_step_profile_percent": shares,
             "compile_seconds": compile_s, "turns_detector_share": tu["share"],
             "turns_peak_rss_mib": {f"{m:.0f} min": v[0] for m, v in rss_turns.items()}}
    return rows, extra


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.epoch_child:
        return epoch_child(args.epoch_child)
    if args.cpu_isa != "native" and os.environ.get(EMULATION_MARK) != args.cpu_isa:
        return rerun_with_isa(args.cpu_isa, argv)
    device = pick_device(args.device)
    use_all_cores()
    info = machine_info(device)
    if args.info_only:
        lines = header_lines(info, None)
        print("\n".join(lines))
        if args.json:
            write_json(args.json, {"machine": info, "header": lines})
            print(f"results: {args.json}")
        return 0
    training = single_process(args.device, args.precision)
    inference = inference_settings(args.device, args.precision)
    args.compiled = use_compile(args.compile, device, args.precision, ESTIMATE_EPOCHS * (args.turns // args.batch),
                                training.bf16)
    channels_last = use_channels_last(args.precision)
    train_prec, infer_prec = fast_precision(training), fast_precision(inference)
    base_prec = baseline_precision(device)
    fast_backends(training)
    n_eval = max(2, args.turns // 4)
    n_predict = args.predict_files
    settings = {"turns": args.turns, "validation/test turns": n_eval, "predict files": n_predict,
                "batch": args.batch, "model": args.model_type, "clusters": args.num_clusters,
                "repeats": args.repeats, "workers": args.workers, "feature files": args.feature_files,
                "train batches": args.train_batches or "all", "scale turns": args.scale_turns,
                "parts": "8 (scale) only" if args.scale_only else ("1-9" if args.scale_turns else "1-7, 9"),
                "scale batch": args.rss_batch, "cache dtype (scale)": args.cache_dtype,
                "threads": torch.get_num_threads(),
                "train_precision": train_prec, "infer_precision": infer_prec, "channels_last": channels_last,
                "compiled": args.compiled, "baseline_precision": base_prec}

    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bench_", dir=args.workdir)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "inductor"))   # as main.py: not ~/.cache
    rows, extra, estimate, est_lines = [], {}, None, []
    try:
        if args.scale_only:
            corpus = Corpus(root)
        else:
            log(f"work folder {root}; synthesising {args.turns}+{n_eval}+{n_eval} turns and {n_predict} files")
            corpus = make_corpus(root, args.turns, n_eval, n_predict)
            rows, extra = bench_pipeline(corpus, args, training, inference, channels_last)
        if args.scale_turns:
            scale = scale_study(corpus, args, device)
            rows += scale_rows(scale, args)
            gpu_rate, gpu_source = args.gpu_train_rate, "--gpu-train-rate"
            if device.type == "cuda":
                acc = scale["runs"][-1]["account"]
                gpu_rate = acc["trained"] * CHUNKS_PER_TURN / acc["measured"]["training"]
                gpu_source = f"measured here on {info['gpu']}, {train_prec}, batch {args.rss_batch}"
            estimate = v112_estimate(scale, info, args, gpu_rate, gpu_source)
            est_lines = estimate_lines(estimate, scale, info, args)
            extra["scale"] = scale
    finally:
        if args.keep:
            log(f"work folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    lines = header_lines(info, settings) + table_lines(rows) + [""] + est_lines
    print("\n".join(lines))
    if args.json:
        write_json(args.json, {"machine": info, "settings": settings, "header": header_lines(info, settings),
                               "rows": rows, "estimate_v1_12": estimate, "extra": extra})
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
