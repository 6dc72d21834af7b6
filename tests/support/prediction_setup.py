"""Untrained attribute models and a NormTerm for the prediction tests (the `setup` fixture of
conftest.py makes them once per module), and prediction_process.py run on them."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import prediction_process
from deepemocluster.features import extract_features
from model import checkpoint_name, prepare_for_inference
from support.audio import voice, write_audio
from support.files import read_csv
from support.models import save_models, write_norm_term
from utils import EMOTIONS, run_cli

K, EPOCHS, BATCH, MT = 4, 1, 4, "Temp-Triplet"
SCORES = ["Aro-Score", "Dom-Score", "Val-Score"]


# --- audio ----------------------------------------------------------------------------------------
def as_read(path):
    """The samples of a file as read whole: float32 (frames, channels), and its rate."""
    y, rate = sf.read(path, dtype="float32", always_2d=True)
    return y, rate


def model_flags(setup):
    return ["-ep", EPOCHS, "-batch", BATCH, "-nc", K, "-mt", MT, "--model-dir", setup["models"],
            "--norm-dir", setup["norm"]]


def predict(setup, input_dir, output, *extra):
    """prediction_process as its command line runs it: the exit status."""
    argv = ["--input", input_dir, "--output", output, *model_flags(setup), *extra]
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: prediction_process.main([str(a) for a in argv]))
    return done.value.code


def scores_by_name(path):
    return {r[0]: np.array([float(v) for v in r[-3:]]) for r in read_csv(path)[1:]}


def loaded_models(setup):
    from model import load_model

    return [prepare_for_inference(load_model(os.path.join(setup["models"], checkpoint_name(
        EPOCHS, BATCH, K, emo, MT)), MT, K), torch.device("cpu"), True) for emo in EMOTIONS]




def make_setup(root):
    """Untrained Temp-Triplet models (K=4) and a NormTerm from the features of synthetic speech."""
    model_dir, norm_dir = str(root / "models"), str(root / "NormTerm")
    save_models(model_dir, MT, [K] * 3, [0] * 3)
    feats = [extract_features(write_audio(str(root / "norm" / f"{i}.wav"), voice(3.0, seed=i)))
             for i in range(3)]
    write_norm_term(norm_dir, np.concatenate(feats))
    return {"models": model_dir, "norm": norm_dir}
