"""The shipped demo models, never a surprise: the Temp-Triplet models in trained_models/ were
trained on the demo corpus's synthetic speech (make_demo_corpus.py), and are what prediction
uses without --release, --model-dir or --onnx. They show the pipeline working; on real
recordings their scores mean nothing (tried as a new user would, they scored real recordings
of sadness below the 1–7 scale). Prediction names them as such in its summary line and warns,
once, when they predict audio from outside the demo corpus.

They are recognised by their checkpoints' sha256, which export_onnx.py also writes into the
metadata of their ONNX files, so a copy of them or their export is recognised too.
"""
import os

from deepemocluster.corpus import DEMO_CORPUS
from deepemocluster.releases import PYTHON, RELEASES
from utils import EMOTIONS, file_sha256

# The sha256 of the shipped demo checkpoints (trained_models/…_{Act,Dom,Val}_Temp-Triplet.pth.tar).
SHIPPED_DEMO_SHA256 = {
    "Act": "f8df85672082067b7432fb5ea6d2a54f67a788f595210b2e38b55253777e9743",
    "Dom": "cf45ec85c207c6a4b041910a9e3d9fbcaee75dd6aeafe1af471f56e515420c49",
    "Val": "dee2ab5a50082ddd11d078d99fbcd790330153e75cb0184cf44df30cffc7a2dc",
}
DEMO_TITLE = ", the shipped demo models (trained on synthetic speech)"   # after models_title's
SUGGESTED_RELEASE = "v1.8-ssl"        # the authors' semi-supervised release (MSP-Podcast v1.8)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkpoint_digests(args, runner):
    """The sha256 of the checkpoints of the models that predict (from an ONNX file's metadata)."""
    if args.onnx:
        return [meta.get("checkpoint_sha256") for meta in runner.metadata]
    from deepemocluster.model_flags import attribute_checkpoints

    return [file_sha256(path) if os.path.isfile(path) else None
            for _, _, _, path in attribute_checkpoints(args)]


def are_demo_models(args, runner):
    """Whether the Act, Dom and Val models that predict are the shipped demo models."""
    return checkpoint_digests(args, runner) == [SHIPPED_DEMO_SHA256[e] for e in EMOTIONS]


def in_demo_corpus(path):
    """Whether an audio file lies in the demo corpus's folder (./demo_corpus, or the repository's)."""
    if not isinstance(path, (str, os.PathLike)):
        return False          # samples in memory: their origin is unknown
    where = os.path.realpath(path)
    folders = {os.path.realpath(DEMO_CORPUS), os.path.realpath(os.path.join(ROOT, DEMO_CORPUS))}
    return any(os.path.commonpath([where, folder]) == folder for folder in folders)


def demo_models_warning(items):
    """The warning when the demo models predict audio from outside the demo corpus, or None."""
    outside = [item for item in items if not in_demo_corpus(item)]
    if not outside:
        return None
    release = RELEASES[SUGGESTED_RELEASE]
    return (f"{len(outside)} of {len(items)} input(s) lie outside the demo corpus ({DEMO_CORPUS}), and "
            f"the shipped demo models were trained on its synthetic speech only: on other audio their "
            f"scores mean nothing. "
            f"For real recordings use the authors' models: `{PYTHON} fetch_models.py {release.name}`, "
            f"then predict with --release {release.name}")
