"""The fixtures more than one test module uses (their helpers are in tests/support/), and the
repository root on sys.path, so that tests import the scripts and packages as a user does."""
import http.server
import os
import sys
import threading

import pytest

pytest.register_assert_rewrite("support")

from support import ROOT  # noqa: E402

sys.path.insert(0, ROOT)
# Tests never reach the internet: ONNX Runtime's import would look up its telemetry collector
# (deepemocluster/onnx_runner.onnx_runtime), in this process and the scripts' it starts.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import export_onnx  # noqa: E402
import feat_extract  # noqa: E402
import fetch_models  # noqa: E402
import norm_para  # noqa: E402
from deepemocluster import releases  # noqa: E402
from deepemocluster.releases import RELEASES, Release  # noqa: E402
from model import checkpoint_name  # noqa: E402
from support.audio import voice, write_audio  # noqa: E402
from support.corpus import write_corpus  # noqa: E402
from support.onnx_export import SHIPPED  # noqa: E402
from support.release_server import (COMMIT, FIXTURE_TYPES, NORM_NAMES, Handler,  # noqa: E402
                                    fixture_content, git_blob_id)
from support.prediction_setup import make_setup  # noqa: E402
from support.training import save_models  # noqa: E402
from utils import EMOTIONS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Audio, labels, features and NormTerm of a 28-turn corpus (made once per session)."""
    root = str(tmp_path_factory.mktemp("corpus"))
    write_corpus(root)
    feats = os.path.join(root, "Features")
    assert feat_extract.main(["--input", os.path.join(root, "Audios"), "--output", feats]) == 0
    norm_para.main(["--labels", os.path.join(root, "Labels", "labels_concensus.csv"),
                    "--features", feats, "--norm-dir", os.path.join(root, "NormTerm")])
    return {"root": root, "audio": os.path.join(root, "Audios"), "features": feats,
            "labels": os.path.join(root, "Labels", "labels_concensus.csv"),
            "norm": os.path.join(root, "NormTerm")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A labelled corpus of 4 Train, 2 Validation and 2 Test1 turns with features and NormTerm."""
    root = str(tmp_path_factory.mktemp("corpus"))
    write_corpus(root, counts=(("Train", 4), ("Validation", 2), ("Test1", 2)), seed=1)
    features = os.path.join(root, "Features")
    summary = feat_extract.extract_folder(os.path.join(root, "Audios"), features)
    assert not summary["failed"]
    labels = os.path.join(root, "Labels", "labels_concensus.csv")
    norm = os.path.join(root, "NormTerm")
    norm_para.save_norm_term(norm_para.compute_norm_term(labels, features)[0], norm)
    return {"root": root, "features": features, "labels": labels, "norm": norm,
            "cache": os.path.join(root, "cache")}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained checkpoints of the small training setup (support.training)."""
    model_dir = str(tmp_path_factory.mktemp("models"))
    save_models(model_dir)
    return model_dir


@pytest.fixture
def release(monkeypatch):
    """A fixture release of 6 models (2 temporal types) and 3 NormTerm files, with its contents."""
    contents = {path: fixture_content(path, 1000) for path in NORM_NAMES}
    monkeypatch.setattr(releases, "NORM_TERM_BLOBS", {p: git_blob_id(c) for p, c in contents.items()})
    blobs = {}
    for emo in EMOTIONS:
        for mt in FIXTURE_TYPES:
            path = "trained_models/" + checkpoint_name(30, 64, 10, emo, mt)
            contents[path] = fixture_content(path, 3 * fetch_models.BLOCK_SIZE + 123)
            blobs[(emo, mt)] = git_blob_id(contents[path])
    rel = Release("fixture", COMMIT, blobs, clusters={e: 10 for e in EMOTIONS},
                  unlabel={e: 0 for e in EMOTIONS})
    monkeypatch.setitem(RELEASES, "fixture", rel)
    return rel, contents


@pytest.fixture
def server(release):
    """A raw-file server on 127.0.0.1 serving the fixture release at /<owner>/<repo>/<commit>/<path>."""
    _, contents = release
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = {f"/{fetch_models.REPOSITORY}/{COMMIT}/{p}": c for p, c in contents.items()}
    httpd.requests, httpd.cut = [], set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    """The shipped demo models (trained Temp-Triplet, released layout) exported to ONNX."""
    out = tmp_path_factory.mktemp("shipped_onnx")
    assert export_onnx.main([*SHIPPED, "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Files of 0.5 s (padded), 0.9 s (whole short turn), 3 s and 7 s, and an unreadable one."""
    audio = tmp_path_factory.mktemp("recordings")
    for i, seconds in enumerate((0.5, 0.9, 3.0, 7.0)):
        write_audio(str(audio / f"r{i}.wav"), voice(seconds, seed=i))
    (audio / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    return audio


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Untrained Temp-Triplet models (K=4) and a NormTerm from the features of synthetic speech
    (support.prediction_setup), once per module."""
    return make_setup(tmp_path_factory.mktemp("predict_setup"))
