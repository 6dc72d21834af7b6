"""The waveform front end export_onnx.py writes (mel_spectrogram.onnx, deepemocluster/onnx_waveform.py): through
ONNX Runtime it gives feat_extract.py's features, so that from the 16 kHz waveform the exported
models give the scores of the features route; prediction with the folder ignores it; the
deployment example of docs/prediction.md with ONNX Runtime alone runs without torch, librosa or this project's code."""
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile

from support import ROOT
from support.audio import voice
from support.onnx_export import EMBEDDING_TOL, SCORE_TOL, models_in

from deepemocluster import onnx_runner  # noqa: E402
from deepemocluster.features import extract_features, load_norm_term, mel_spectrogram  # noqa: E402
from deepemocluster.onnx_runner import FEATURE_SETTINGS, WAVEFORM_FILE, WAVEFORM_FORMAT  # noqa: E402
from support.docs import deployment_examples  # noqa: E402
from utils import EMOTIONS, UserError  # noqa: E402

FEATURE_RTOL = 2e-6      # every element of the mel spectrogram, relative (docs/prediction.md: 1e-5)
# The shortest input; librosa's separate tail padding (lengths 256 q, q ≥ 2); others.
LENGTHS = (257, 300, 511, 512, 513, 768, 1000, 32000, 48000, 16000 * 7 + 5)


def front_end(folder):
    return ort.InferenceSession(str(folder / WAVEFORM_FILE), providers=["CPUExecutionProvider"])


def signal(kind, n):
    """n samples of the voice of the windows tests, or of white noise (every band as loud)."""
    if kind == "voice":
        return voice(n / 16000 + 0.01, seed=n)[:n]
    return (0.1 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")     # librosa, on under 512 samples
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("kind", ["voice", "noise"])
def test_the_waveform_graph_gives_feat_extracts_features(shipped_onnx, kind, n):
    y = signal(kind, n)
    assert len(y) == n
    expected = mel_spectrogram(y)
    (got,) = front_end(shipped_onnx).run(["mel"], {"waveform": y})
    assert got.dtype == np.float32 and got.shape == expected.shape == (n // 256 + 1, 128)
    np.testing.assert_allclose(got, expected, rtol=FEATURE_RTOL, atol=0)


def test_the_front_end_file_says_what_it_is(shipped_onnx):
    proto = onnx.load(str(shipped_onnx / WAVEFORM_FILE))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["format"] == WAVEFORM_FORMAT
    assert {k: meta[k] for k in FEATURE_SETTINGS} == FEATURE_SETTINGS
    assert meta["licence"].startswith("MIT licence") and "Lin and C. Busso" in meta["citation"]
    assert [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input] == [("waveform", ["samples"])]
    assert [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
            for o in proto.graph.output] == [("mel", ["frames", 128])]
    assert sorted(i.name for i in proto.graph.initializer) == sorted(     # constants, no weights
        ["centre_pads", "zero", "last", "end", "hop", "n_fft_1d", "tail_offset",
         "batch_and_channel_axes", "hop_length", "n_fft", "hann_window", "real_imaginary_axis",
         "batch_axis", "mel_filters"])
    assert {n.op_type for n in proto.graph.node} >= {"STFT", "Pad", "MatMul"}
    turn = onnx.load(str(shipped_onnx / models_in(shipped_onnx)[0]))
    assert (proto.ir_version, list(proto.opset_import)) == (turn.ir_version, [
        o for o in turn.opset_import if o.domain in ("", "ai.onnx")])


def test_silence_gives_nan_which_the_models_read_as_zero(shipped_onnx):
    """feat_extract.py refuses silent audio; the graph cannot, and its NaN reaches the models
    as the normalised value 0 (method §3's NaN → 0), which docs/prediction.md tells deployers."""
    (mel,) = front_end(shipped_onnx).run(["mel"], {"waveform": np.zeros(16000, np.float32)})
    assert mel.shape == (63, 128) and np.isnan(mel).all()
    models = onnx_runner.OnnxModels(str(shipped_onnx), threads=1)
    norm = load_norm_term(os.path.join(ROOT, "NormTerm"))
    at_mean = np.broadcast_to(norm["features"].mean, mel.shape).astype(np.float32)   # normalised: ~0
    np.testing.assert_allclose(models.predict([mel])[0], models.predict([at_mean])[0], rtol=0, atol=1e-6)


def test_from_the_waveform_the_models_give_the_scores_of_the_features(recordings, shipped_onnx):
    """The recordings of test_onnx (0.5 s padded, 0.9 s a whole short turn, 3 s, 7 s)."""
    models = onnx_runner.OnnxModels(str(shipped_onnx), threads=1)
    assert models.names == models_in(shipped_onnx)
    session = front_end(shipped_onnx)
    paths = [str(recordings / f"r{i}.wav") for i in range(4)]
    from_waveform = [session.run(["mel"], {"waveform": soundfile.read(p, dtype="float32")[0]})[0]
                     for p in paths]
    scores, vectors = models.predict(from_waveform, embeddings=True)
    ref_scores, ref_vectors = models.predict([extract_features(p) for p in paths], embeddings=True)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(vectors, ref_vectors, rtol=0, atol=EMBEDDING_TOL)
    assert np.ptp(ref_scores, axis=1).min() > 0.05


def test_a_folder_with_only_the_front_end_has_no_models(shipped_onnx, tmp_path):
    (tmp_path / WAVEFORM_FILE).write_bytes((shipped_onnx / WAVEFORM_FILE).read_bytes())
    with pytest.raises(UserError) as err:
        onnx_runner.OnnxModels(str(tmp_path))
    assert str(err.value).startswith(f"--onnx {tmp_path} has no Act model (found: {WAVEFORM_FILE})")


def test_docs_example_with_onnx_runtime_alone(recordings, shipped_onnx):
    code = deployment_examples()[1]
    code = re.sub(r'MODELS = ".*"', f'MODELS = "{shipped_onnx}"', code)
    code = re.sub(r'WAV = ".*"', f'WAV = "{recordings / "r2.wav"}"', code)
    code += ("\nimport sys\nleft = {'torch', 'librosa', 'features', 'utils'} & set(sys.modules)\n"
             "assert not left, f'the example imported {left}'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line.split() for line in done.stdout.splitlines()]
    assert [p[0] for p in printed] == list(EMOTIONS) and all(p[2:] == ["(256,)"] for p in printed)
    expected, _ = onnx_runner.OnnxModels(str(shipped_onnx), threads=1).predict(
        [extract_features(str(recordings / "r2.wav"))])
    np.testing.assert_allclose([float(p[1]) for p in printed], expected[:, 0], rtol=0, atol=SCORE_TOL)
