"""The small training setup of the fault tests (K clusters, batches of BATCH, Temp-Triplet on
Val): its command lines, the files a run writes, untrained checkpoints under its names, and
what makes two runs the same."""
import json
import os

import torch

from model import ARCH, build_model, checkpoint_name, released_state_dict
from utils import EMOTIONS, save_torch

K = 4
BATCH = 4


def train_argv(corpus, model_dir, epochs=3, labels=None, features=None):
    return ["-ep", epochs, "-batch", BATCH, "-nc", K, "-emo", "Val", "-mt", "Temp-Triplet",
            "--features", features or corpus["features"], "--labels", labels or corpus["labels"],
            "--norm-dir", corpus["norm"], "--model-dir", model_dir, "--cache-dir", corpus["cache"]]


def run_files(model_dir, epochs=3):
    name = checkpoint_name(epochs, BATCH, K, "Val", "Temp-Triplet")
    ckpt = os.path.join(str(model_dir), name)
    stem_ = ckpt[:-len(".pth.tar")]
    return {"checkpoint": ckpt, "resume": stem_ + "_resume.pth.tar",
            "clusters": stem_ + "_clusters.npy", "history": stem_ + "_history.json"}


def assert_same_training(files, whole, epochs):
    """Bit-identical to the uninterrupted run: checkpoint, resume state, cluster log, history
    (but for the seconds each epoch took). Returns the history."""
    for key in ("checkpoint", "resume", "clusters"):
        assert open(files[key], "rb").read() == open(whole[key], "rb").read(), key
    with open(files["history"]) as f, open(whole["history"]) as g:
        resumed, uninterrupted = json.load(f), json.load(g)
    for h in (resumed, uninterrupted):
        assert len(h.pop("seconds")) == epochs
    assert resumed == uninterrupted
    return resumed


def save_models(model_dir, temporal_type="Temp-Triplet", n_clusters=K, as_type="Temp-Triplet",
                as_clusters=K, epochs=1):
    """Untrained attribute checkpoints of one setup, saved under the names of another."""
    for i, emo in enumerate(EMOTIONS):
        torch.manual_seed(i)
        model = build_model(temporal_type, n_clusters)
        name = checkpoint_name(epochs, BATCH, as_clusters, emo, as_type)
        save_torch(os.path.join(str(model_dir), name),
                   {"arch": ARCH, "state_dict": released_state_dict(model)})


def predict_argv(corpus, model_dir, input_dir, output, norm=None, n_clusters=K, mt="Temp-Triplet"):
    return ["--input", input_dir, "--output", output, "-ep", 1, "-batch", BATCH, "-nc", n_clusters,
            "-mt", mt, "--model-dir", model_dir, "--norm-dir", norm or corpus["norm"]]
