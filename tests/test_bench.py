"""The bench package's own pieces (CPU, no timing assertions): the synthetic scale corpus, the CPU
capability in the header and JSON, the accounting of an epoch's stages, and the speaking-turn rows."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench import EMOTION
from bench.baseline import PerChunkReader, model_pair
from bench.corpus import SYNTH_FRAMES, make_norm_term, subset_labels, write_scale_corpus
from bench.epoch import EPOCH_STAGES, epoch_accounting, median_epoch
from bench.machine import CAP_VARIABLES, machine_info
from bench.report import header_lines, table_lines
from bench.scale import V112_DEVELOPMENT, V112_TRAIN, cache_turn_bytes, dev_turns, scale_sizes
from bench.training import bench_epochs, epoch_rows
from support import ROOT
from dataloader import LabelledTurns
from deepemocluster.labels import feature_paths, read_labels, validation_split
from deepemocluster.compute import Settings, cpu_capability, cpu_flags
from utils import EMOTIONS, FEATURE_VAR, N_MELS, load_mat


def test_synthetic_scale_corpus_has_plausible_mat_files_and_readable_labels(tmp_path):
    labels, feats, rows = write_scale_corpus(str(tmp_path), 12, 4, "synthetic", seed=3, every=0)
    mats = sorted(os.listdir(feats))
    assert len(mats) == 16 and all(m.endswith(".mat") for m in mats)
    for name in mats:
        x = load_mat(os.path.join(feats, name), FEATURE_VAR)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == N_MELS
        assert SYNTH_FRAMES[0] <= x.shape[0] <= SYNTH_FRAMES[1]
        assert np.isfinite(x).all() and (x > 0).all()
    assert SYNTH_FRAMES == (172, 688)          # 2.75 s and 11 s, hop 256 at 16 kHz
    stems, values = read_labels(labels, "Train", EMOTIONS)
    assert len(stems) == 12 and len(feature_paths(feats, stems)) == 12
    for emo in EMOTIONS:
        assert ((1 <= values[emo]) & (values[emo] <= 7)).all()
    assert validation_split(labels) == "Development"
    assert len(read_labels(labels, "Development", EMOTIONS)[0]) == 4
    # The same seed writes the same features.
    again, feats2, _ = write_scale_corpus(str(tmp_path / "again"), 1, 1, "synthetic", seed=3, every=0)
    assert np.array_equal(load_mat(os.path.join(feats, mats[0]), FEATURE_VAR),
                          load_mat(os.path.join(feats2, mats[0]), FEATURE_VAR))
    # A subset for the smaller scale run.
    small = subset_labels(rows, str(tmp_path / "small.csv"), 3, 1)
    assert len(read_labels(small, "Train")[0]) == 3 and len(read_labels(small, "Development")[0]) == 1


def test_scale_sizes_and_development_share():
    assert scale_sizes(20000, 4, 10) == [5000, 20000]
    assert scale_sizes(8, 4, 10) == [2, 8]               # 2 turns = 22 chunks >= K
    assert scale_sizes(5, 1, 10) == [5]
    assert dev_turns(V112_TRAIN) == V112_DEVELOPMENT
    assert cache_turn_bytes("float32") == 11 * 62 * 128 * 4
    assert cache_turn_bytes("float16") == 11 * 62 * 128 * 2


def test_cpu_capability_in_header_and_json_under_an_environment_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    info = machine_info(torch.device("cpu"), probe=False)
    assert info["cpu_capability"] == cpu_capability()
    assert info["cpu_isa_environment"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    line = "\n".join(header_lines(info, None))
    assert f"cpu     : {info['cpu_capability']}" in line
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in line
    if "avx2" in cpu_flags():
        assert info["cpu_capability"] == "AVX2" and not info["cpu_native_bf16"]
        if info["cpu_capability_native"] != "AVX2":
            assert "capped by the environment" in line
    json.dumps(info)          # what --json writes


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="needs an x86 CPU with AVX2")
def test_cpu_isa_avx2_reruns_with_the_libraries_capped(tmp_path):
    out = tmp_path / "info.json"
    env = {k: v for k, v in os.environ.items() if k not in CAP_VARIABLES}
    proc = subprocess.run([sys.executable, "bench.py", "--info-only", "--cpu-isa", "avx2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cpu_capability"] == "AVX2" and machine["cpu_isa_emulation"] == "avx2"
    assert machine["aten_cpu_capability"] == "AVX2"
    assert machine["cpu_isa_environment"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    if machine["onednn_isa"] is not None:
        assert "AVX2" in machine["onednn_isa"] and "512" not in machine["onednn_isa"]
    assert "AVX2, EMULATED (--cpu-isa avx2)" in proc.stdout
    assert any("EMULATED" in line for line in result["header"])


def test_epoch_accounting_extrapolates_training_and_sums_to_the_total():
    seconds = {"chunk features": 2.0, "k-means": 0.5, "sampling": 0.01, "training": 3.0, "validation": 1.0}
    acc = epoch_accounting(seconds, drawn=100, trained=25)
    assert acc["limited"] and acc["training_factor"] == 4.0
    assert acc["stages"]["training"] == pytest.approx(12.0)
    assert acc["total"] == pytest.approx(sum(acc["stages"].values()))
    assert acc["measured_total"] == pytest.approx(sum(seconds.values()))
    whole = epoch_accounting(seconds, drawn=100, trained=100)
    assert not whole["limited"] and whole["total"] == pytest.approx(whole["measured_total"])
    med = median_epoch([acc, epoch_accounting(dict(seconds, training=5.0), 100, 25)])
    assert med["total"] == pytest.approx(sum(med["stages"].values()))


def test_a_real_epoch_of_both_designs_is_accounted_stage_by_stage(tmp_path):
    labels, feats, _ = write_scale_corpus(str(tmp_path), 5, 2, "synthetic", seed=1, every=0)
    norm = make_norm_term(labels, feats, str(tmp_path / "NormTerm"))
    cache = str(tmp_path / "cache")
    train = LabelledTurns("Train", labels, feats, norm, EMOTION, cache)
    val = LabelledTurns("Development", labels, feats, norm, EMOTION, cache)
    device = torch.device("cpu")
    fast, base = model_pair("Temp-Triplet", 10, device, True, 0)
    reader = PerChunkReader(feature_paths(feats, train.stems), norm["features"])
    val_reader = PerChunkReader(feature_paths(feats, val.stems), norm["features"])

    class Args:
        model_type, num_clusters, batch, repeats, train_batches = "Temp-Triplet", 10, 2, 1, 1
    epochs, designs = bench_epochs(fast, base, train, val, reader, val_reader, Args, Settings(device))
    for name in ("fast", "base"):
        e = epochs[name]
        assert set(e["stages"]) == set(EPOCH_STAGES)
        assert e["drawn"] == 5 and e["trained"] == 2 and e["limited"]
        assert e["total"] == pytest.approx(sum(e["stages"].values()))
        assert e["stages"]["training"] == pytest.approx(e["measured"]["training"] * 5 / 2)
        assert np.isfinite(designs[name]["last"]["train_loss"]) and np.isfinite(designs[name]["last"]["val_loss"])
    rows = epoch_rows(epochs, 5, 2, 55, Args, ("fp32", "fp32"))
    epoch_row = next(r for r in rows if r["measurement"].startswith("ONE TRAINING EPOCH"))
    assert "extrapolated" in epoch_row["measurement"] and "TRAINING LIMITED" in epoch_row["note"]
    assert epoch_row["value"] == pytest.approx(sum(r["value"] for r in rows if "epoch stage" in r["measurement"]))
    assert all(r["precision"] == "fp32" for r in rows)
    assert "precision" in table_lines(rows)[0]


def test_the_speaking_turn_rows_time_the_detector_and_the_prediction(tmp_path):
    """Item 9 on a 1-minute long demo recording: both rates, the detector's share of the
    prediction time, and a longer recording made of copies for the memory rows."""
    import types

    import soundfile as sf

    from bench.turns import bench_turns, write_copies

    corpus = types.SimpleNamespace(root=str(tmp_path), norm_dir=os.path.join(ROOT, "NormTerm"))
    args = types.SimpleNamespace(turns_minutes=1, model_type="Temp-Triplet", num_clusters=10, precision="fp32")
    result = bench_turns(corpus, args, torch.device("cpu"), 1, False)
    assert result["turns"] >= 5 and 55 <= result["seconds"] <= 60
    assert result["detector"][0] > 0 and result["prediction"][0] > 0 and result["share"] > 0
    copies = write_copies(result["wav"], str(tmp_path / "three.wav"), 3)
    assert sf.info(copies).frames == 3 * sf.info(result["wav"]).frames
