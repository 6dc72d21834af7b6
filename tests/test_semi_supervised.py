"""Semi-supervised training from an unlabelled pool (-unlabel N)."""
import glob
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import torch

import main as train_script
from support import ROOT
from dataloader import ChunkCache
from deepemocluster.features import load_norm_term
from model import build_model
from deepemocluster.compute import Settings


def make_pool(tiny_corpus, tmp_path, n=8):
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted(glob.glob(os.path.join(tiny_corpus["features"], "*.mat")))[:n]:
        shutil.copy(path, pool / ("UNLABELED_" + os.path.basename(path)))
    return str(pool)


def common_flags(tiny_corpus, tmp_path):
    return ["--features", tiny_corpus["features"], "--labels", tiny_corpus["labels"],
            "--norm-dir", tiny_corpus["norm"], "--model-dir", str(tmp_path / "models"),
            "--cache-dir", str(tmp_path / "cache")]


def test_unsupervised_stage_freezes_regression_head_and_trains_cluster_path(tiny_corpus, tmp_path):
    norm = load_norm_term(tiny_corpus["norm"])
    paths = sorted(glob.glob(os.path.join(tiny_corpus["features"], "*.mat")))[:8]
    pool = ChunkCache.build(str(tmp_path / "pool.npy"), paths, norm["features"])
    for mt in ("Temp-Trans", "Temp-Triplet"):
        torch.manual_seed(0)
        model = build_model(mt, 4)
        model.remove_cluster_head()
        optimizers = train_script.make_optimizers(model)
        model.restore_cluster_head()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        args = SimpleNamespace(batch_size=4, num_clusters=4)
        gen = torch.Generator().manual_seed(0) if mt == "Temp-Triplet" else None
        state = train_script.TrainingState(model, optimizers, np.random.default_rng(0), gen)
        loss = train_script.unsupervised_stage(state, pool, args, Settings(torch.device("cpu")))
        after = model.state_dict()
        assert np.isfinite(loss) and loss > 0
        for key in ("emo_regressor.0.weight", "emo_regressor.0.bias",
                    "top_layer_attri.weight", "top_layer_attri.bias"):
            assert torch.equal(before[key], after[key]), key
        for key in ("cnn_features.0.weight", "cnn_out.0.weight", "classifier.0.weight"):
            assert not torch.equal(before[key], after[key]), key
        if mt == "Temp-Trans":
            assert not torch.equal(before["temporal_net.linear1.weight"],
                                   after["temporal_net.linear1.weight"])
        # The stage leaves every parameter trainable again for the supervised stage.
        assert all(p.requires_grad for p in model.parameters())


def test_unlabel_larger_than_pool_is_refused(tiny_corpus, tmp_path):
    pool = make_pool(tiny_corpus, tmp_path, n=5)
    proc = subprocess.run([sys.executable, "main.py", "-ep", "1", "-batch", "4", "-emo", "Act",
                           "-nc", "4", "-mt", "Temp-Trans", "-unlabel", "6",
                           "--unlabeled-features", pool] + common_flags(tiny_corpus, tmp_path),
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "-unlabel 6 is larger than the unlabelled pool (5 feature files" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists() or not os.listdir(tmp_path / "models")


def test_semi_supervised_run_end_to_end(tiny_corpus, tmp_path):
    pool = make_pool(tiny_corpus, tmp_path, n=6)
    flags = ["-ep", "2", "-batch", "4", "-emo", "Val", "-nc", "4", "-mt", "Temp-Triplet",
             "-unlabel", "5"] + common_flags(tiny_corpus, tmp_path)
    proc = subprocess.run([sys.executable, "main.py", "--unlabeled-features", pool] + flags,
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "5 unlabelled turns" in proc.stdout
    assert proc.stdout.count("unsupervised loss") == 2
    name = "TempDeepEmoCluster_epoch2_batch4_4clusters_Val_Temp-Triplet_unlabel5.pth.tar"
    ckpt = torch.load(tmp_path / "models" / name, weights_only=True)
    assert ckpt["arch"] == "vgg16" and "top_layer_attri.weight" in ckpt["state_dict"]
    test = subprocess.run([sys.executable, "online_testing.py"] + flags,
                          cwd=ROOT, capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    assert "Unlabelled: 5" in test.stdout
    ccc = float(test.stdout.split("Test1 CCC (6 turns):")[1].split()[0])
    assert -1.0 <= ccc <= 1.0
    # Without -unlabel the same flags look for the supervised checkpoint, which does not exist.
    sup = [f for f in flags if f not in ("-unlabel", "5")]
    missing = subprocess.run([sys.executable, "online_testing.py"] + sup,
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "TempDeepEmoCluster_epoch2_batch4_4clusters_Val_Temp-Triplet.pth.tar" in missing.stderr
