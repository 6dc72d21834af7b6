"""Shared fixtures: a tiny labelled corpus made on the fly, in the MSP-Podcast layout."""
import csv
import os
import sys

import numpy as np
import pytest
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SR = 16000


def tone_turn(rng, level, seconds):
    """A buzzy tone whose pitch and brightness follow `level` (a label in 1–7)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 100 + 25 * level
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h ** (2.5 - 0.25 * level) for h in range(1, 12))
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2) + 0.01 * rng.standard_normal(len(t))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def write_corpus(root, counts=(("Train", 16), ("Validation", 6), ("Test1", 6)), seed=0):
    rng = np.random.default_rng(seed)
    audio = os.path.join(root, "Audios")
    os.makedirs(audio)
    os.makedirs(os.path.join(root, "Labels"))
    rows, k = [], 0
    for split, n in counts:
        for _ in range(n):
            level = float(rng.uniform(1, 7))
            name = f"MSP-PODCAST_{k // 4:04d}_{k:04d}.wav"
            sf.write(os.path.join(audio, name), tone_turn(rng, level, rng.uniform(2.75, 4.0)), SR,
                     subtype="PCM_16")
            rows.append([name, "N", round(level, 2), round(8 - level, 2), round(level, 2),
                         k // 4, "Female", split])
            k += 1
    with open(os.path.join(root, "Labels", "labels_concensus.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Audio, labels, features and NormTerm of a 28-turn corpus (made once per session)."""
    import feat_extract
    import norm_para

    root = str(tmp_path_factory.mktemp("corpus"))
    write_corpus(root)
    feats = os.path.join(root, "Features")
    assert feat_extract.main(["--input", os.path.join(root, "Audios"), "--output", feats]) == 0
    norm_para.main(["--labels", os.path.join(root, "Labels", "labels_concensus.csv"),
                    "--features", feats, "--norm-dir", os.path.join(root, "NormTerm")])
    return {"root": root, "audio": os.path.join(root, "Audios"), "features": feats,
            "labels": os.path.join(root, "Labels", "labels_concensus.csv"),
            "norm": os.path.join(root, "NormTerm")}


def write_random_release(root, name="v1.8-ssl", temporal_type="Temp-Trans"):
    """What fetch_models.py installs for release `name` into root/name, with random weights (seed
    0) under the release's checkpoint names and a NormTerm of ones: for tests, which never download."""
    import fetch_models
    import torch
    from model import ARCH, build_model, released_state_dict
    from utils import EMOTIONS, NORM_VAR, save_mat, save_torch

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
