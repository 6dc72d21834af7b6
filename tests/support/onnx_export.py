"""The shipped demo models as export_onnx.py exports them, the tolerances ONNX Runtime's
predictions are held to."""
import os

from deepemocluster import onnx_runner
from support import ROOT

SCORE_TOL, EMBEDDING_TOL = 1e-5, 1e-4
SHIPPED = ["-ep", "30", "-batch", "64", "-nc", "10", "-mt", "Temp-Triplet",
           "--model-dir", os.path.join(ROOT, "trained_models"), "--norm-dir", os.path.join(ROOT, "NormTerm")]


def models_in(folder):
    """The attribute files export_onnx.py wrote into `folder` (the waveform front end aside)."""
    return sorted(f for f in os.listdir(folder) if f != onnx_runner.WAVEFORM_FILE)

