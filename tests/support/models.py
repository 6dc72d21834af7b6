"""Checkpoints and NormTerms for the prediction tests, under the names the scripts look for:
untrained models of one setup, a NormTerm from given features, and a whole release with
random weights."""
import os

import numpy as np
import torch

import fetch_models
from model import ARCH, build_model, checkpoint_name, released_state_dict
from support.training import BATCH
from utils import EMOTIONS, NORM_VAR, save_mat, save_torch


def save_models(model_dir, temporal_type, clusters, unlabel, epochs=1, batch=BATCH):
    """Untrained checkpoints of each attribute, with its cluster count and unlabel size."""
    for i, (emo, k, n) in enumerate(zip(EMOTIONS, clusters, unlabel)):
        torch.manual_seed(i)
        model = build_model(temporal_type, k)
        save_torch(os.path.join(model_dir, checkpoint_name(epochs, batch, k, emo, temporal_type, n)),
                   {"arch": ARCH, "state_dict": released_state_dict(model)})


def write_norm_term(norm_dir, feats):
    """The features' mean and std, and fixed label statistics."""
    save_mat(os.path.join(norm_dir, "feat_norm_means.mat"), NORM_VAR, feats.mean(axis=0)[None])
    save_mat(os.path.join(norm_dir, "feat_norm_stds.mat"), NORM_VAR, feats.std(axis=0)[None])
    for emo, (mean, std) in zip(EMOTIONS, ((4.0, 1.0), (4.2, 0.9), (3.9, 1.1))):
        save_mat(os.path.join(norm_dir, f"{emo.lower()}_norm_means.mat"), NORM_VAR, np.array([[mean]]))
        save_mat(os.path.join(norm_dir, f"{emo.lower()}_norm_stds.mat"), NORM_VAR, np.array([[std]]))


def write_random_release(root, name="v1.8-ssl", temporal_type="Temp-Trans"):
    """What fetch_models.py installs for release `name` into root/name, with random weights (seed
    0) under the release's checkpoint names and a NormTerm of ones: for tests, which never download."""
    release = fetch_models.RELEASES[name]
    base = os.path.join(str(root), name)
    for emo in EMOTIONS:
        torch.manual_seed(0)
        model = build_model(temporal_type, release.clusters[emo])
        save_torch(os.path.join(base, release.model_path(emo, temporal_type)),
                   {"arch": ARCH, "state_dict": released_state_dict(model)})
    for path in release.files(temporal_type):
        if path.startswith("NormTerm/"):
            size = (1, 128) if "feat_" in path else (1, 1)
            save_mat(os.path.join(base, path), NORM_VAR, np.ones(size))
    return base
