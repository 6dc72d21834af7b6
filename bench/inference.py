"""Items 3 and 4: online testing (online_testing.test_ccc) and end-to-end prediction
(prediction.predict_folder), each against the baseline."""
import contextlib
import io
import os
import shutil

import numpy as np
import torch

import export_onnx
import online_testing
from deepemocluster import prediction
from bench import EMOTION, SEED
from bench.baseline import baseline_predict, baseline_test_ccc, model_pair
from bench.machine import fast_backends, original_backends
from bench.measure import rate, timed
from deepemocluster.features import load_norm_term, walk_audio
from deepemocluster.labels import read_labels
from deepemocluster.onnx_runner import OnnxModels
from model import ARCH, build_model, checkpoint_name, prepare_for_inference, released_state_dict
from deepemocluster.compute import use_channels_last
from utils import EMOTIONS, save_torch


# --- 3: online testing ----------------------------------------------------------------------
def write_test_checkpoint(corpus, args, seed):
    """A fresh random model saved under the name online_testing looks for."""
    torch.manual_seed(seed)
    model = build_model(args.model_type, args.num_clusters)
    name = checkpoint_name(1, args.batch, args.num_clusters, EMOTION, args.model_type)
    path = os.path.join(corpus.model_dir, name)
    save_torch(path, {"arch": ARCH, "state_dict": released_state_dict(model)})
    return path


def bench_online_testing(corpus, args, inference, repeats):
    """online_testing.test_ccc with a warm and with a cold chunk cache, and the baseline: turns/s."""
    device = inference.device
    ckpt = write_test_checkpoint(corpus, args, SEED + 1)
    n_turns = len(read_labels(corpus.labels, "Test1")[0])
    cold_dir = os.path.join(corpus.root, "cache_test_cold")

    def targs(cache_dir):
        return online_testing.parse_args([
            "-ep", "1", "-batch", str(args.batch), "-emo", EMOTION, "-nc", str(args.num_clusters),
            "-mt", args.model_type, "--features", corpus.features, "--labels", corpus.labels,
            "--cache-dir", cache_dir, "--norm-dir", corpus.norm_dir, "--model-dir", corpus.model_dir,
            "--device", str(device), "--precision", args.precision])
    res = {}

    def run_warm():
        res["fast"] = online_testing.test_ccc(targs(corpus.cache_dir))   # sets main.py's flags itself

    def run_cold():
        online_testing.test_ccc(targs(cold_dir))

    def run_base():
        original_backends(device)
        res["base"] = baseline_test_ccc(ckpt, corpus, args, device)
    t_warm = timed(run_warm, repeats, device)
    t_cold = timed(run_cold, repeats, device, setup=lambda: shutil.rmtree(cold_dir, ignore_errors=True))
    t_base = timed(run_base, repeats, device)
    fast_backends(inference)
    diff = float(np.max(np.abs(res["fast"][1] - res["base"][1])))
    return {"warm": rate(n_turns, t_warm) + (t_warm,), "cold": rate(n_turns, t_cold) + (t_cold,),
            "base": rate(n_turns, t_base) + (t_base,), "ccc_fast": res["fast"][0],
            "ccc_base": res["base"][0], "max_pred_diff": diff, "turns": n_turns}


# --- 4: end-to-end prediction ----------------------------------------------------------------
def export_for_onnx_runtime(corpus, args, models):
    """The prediction rows' models saved as checkpoints and exported by export_onnx.py: the
    folder of the three .onnx files."""
    model_dir, out = os.path.join(corpus.root, "onnx_checkpoints"), os.path.join(corpus.root, "onnx")
    for emo, model in zip(EMOTIONS, models):
        name = checkpoint_name(1, args.batch, args.num_clusters, emo, args.model_type)
        save_torch(os.path.join(model_dir, name), {"arch": ARCH, "state_dict": released_state_dict(model)})
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx.main(["-ep", "1", "-batch", str(args.batch), "-nc", str(args.num_clusters),
                          "-mt", args.model_type, "--model-dir", model_dir, "--norm-dir", corpus.norm_dir,
                          "--output", out])
    return out


def bench_prediction(corpus, args, inference, repeats):
    """prediction.predict_folder (1 worker and --workers) vs the baseline, and with
    the same models exported to ONNX and run by ONNX Runtime (1 worker): files/s."""
    device = inference.device
    wavs, _ = walk_audio(corpus.predict)
    norm = load_norm_term(corpus.norm_dir)
    fast, base = [], []
    for k in range(len(EMOTIONS)):
        f, b = model_pair(args.model_type, args.num_clusters, device, False, SEED + 10 + k)
        fast.append(prepare_for_inference(f, device, use_channels_last(args.precision)))
        base.append(b.eval())
    res, out = {}, {}
    for w in sorted({1, args.workers}):
        def run(w=w):
            fast_backends(inference)        # as prediction_process.main sets them
            res[w] = prediction.predict_folder(wavs, prediction.TorchModels(fast, norm, inference), w)
        t = timed(run, repeats, device)
        out[w] = rate(len(wavs), t) + (t,)

    onnx_runner = OnnxModels(export_for_onnx_runtime(corpus, args, base))

    def run_onnx():
        res["onnx"] = prediction.predict_folder(wavs, onnx_runner, 1)
    t_onnx = timed(run_onnx, repeats, device)
    out["onnx"] = rate(len(wavs), t_onnx) + (t_onnx,)

    def run_base():
        original_backends(device)
        res["base"] = baseline_predict(wavs, base, norm, device)
    t_base = timed(run_base, repeats, device)
    fast_backends(inference)
    out["base"] = rate(len(wavs), t_base) + (t_base,)
    fast_rows = np.array([r[1:] for r in res[1][0]])
    base_rows = np.array([r[1:] for r in res["base"]])
    onnx_rows = np.array([r[1:] for r in res["onnx"].rows])
    out["max_pred_diff"] = float(np.max(np.abs(fast_rows - base_rows)))
    out["onnx_max_diff"] = float(np.max(np.abs(onnx_rows - fast_rows)))
    out["files"] = len(wavs)
    return out
