"""Tests for deepemocluster/features.py, labels.py and utils.py (features, normalisation, chunking, CCC,
sampling, labels), the feature extractor and the NormTerm computation, against method §1,
§3, §4, §6."""
import csv
import os

import numpy as np
import pytest
import scipy.io
import soundfile as sf
import torch

import feat_extract
from deepemocluster import features
import utils
from deepemocluster.labels import feature_paths, read_labels
from utils import UserError

SR = 16000


# --- method §4: chunking ---------------------------------------------------------------
@pytest.mark.parametrize("n_frames", [62, 63, 100, 172, 688, 1000])
def test_chunk_starts_follow_spec_formula(n_frames):
    step = (n_frames - 62) // 10
    expected = [i * step for i in range(11)]
    assert list(features.chunk_starts(n_frames)) == expected
    # The last chunk stays inside the turn.
    assert expected[-1] + 62 <= n_frames


def test_chunk_starts_known_values():
    assert list(features.chunk_starts(62)) == [0] * 11
    assert list(features.chunk_starts(63)) == [0] * 11
    assert list(features.chunk_starts(100)) == [3 * i for i in range(11)]
    assert list(features.chunk_starts(172)) == [11 * i for i in range(11)]
    assert list(features.chunk_starts(688)) == [62 * i for i in range(11)]
    assert list(features.chunk_starts(1000)) == [93 * i for i in range(11)]


@pytest.mark.parametrize("n_frames", [62, 63, 100, 172, 688, 1000])
def test_chunk_turn_contents_equal_slices(n_frames):
    rng = np.random.default_rng(n_frames)
    feat = rng.standard_normal((n_frames, 128)).astype(np.float32)
    chunks = features.chunk_turn(feat)
    assert chunks.shape == (11, 62, 128)
    step = (n_frames - 62) // 10
    for i in range(11):
        np.testing.assert_array_equal(chunks[i], feat[i * step:i * step + 62])


def test_688_frames_gives_non_overlapping_chunks_covering_turn():
    feat = np.arange(688 * 128, dtype=np.float32).reshape(688, 128)
    chunks = features.chunk_turn(feat)
    np.testing.assert_array_equal(chunks.reshape(-1, 128), feat[:682])


def test_short_turn_is_zero_padded_to_one_chunk():
    rng = np.random.default_rng(1)
    feat = rng.uniform(0.5, 1.5, (40, 128)).astype(np.float32)
    chunks = features.chunk_turn(feat)
    assert chunks.shape == (11, 62, 128)
    for i in range(11):
        np.testing.assert_array_equal(chunks[i], chunks[0])
    np.testing.assert_array_equal(chunks[0, :40], feat)
    np.testing.assert_array_equal(chunks[0, 40:], np.zeros((22, 128), np.float32))


# --- method §3: applied feature normalisation ----------------------------------------
def test_normalise_features_formula_nan_and_clip():
    mean = np.array([1.0, 2.0, 0.0, 5.0, 5.0, 0.0])
    std = np.array([2.0, 0.5, 1.0, 0.0, 0.0, 1.0])
    x = np.array([
        [3.0, 2.5, 0.5, 5.0, 6.0, np.nan],    # ordinary, ordinary, ordinary, 0/0, +1/0, NaN
        [-10.0, 4.0, -2.9, 5.0, 4.0, 7.0],    # -5.5→-3, 4→+3, -2.9, 0/0, -1/0, 7→3
        [1.0, 0.5, 3.0, 5.0, 5.0, -3.0],      # 0, -3 exactly, 3 exactly, 0/0, 0/0, -3
    ])
    out = features.normalise_features(x, mean, std)
    expected = np.array([
        [1.0, 1.0, 0.5, 0.0, 3.0, 0.0],
        [-3.0, 3.0, -2.9, 0.0, -3.0, 3.0],
        [0.0, -3.0, 3.0, 0.0, 0.0, -3.0],
    ], dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert np.isfinite(out).all()


def test_normalise_features_random_matches_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(5, 3, (200, 128))
    mean = rng.normal(5, 1, 128)
    std = rng.uniform(0.5, 4, 128)
    expected = np.clip((x - mean) / std, -3, 3)
    np.testing.assert_allclose(features.normalise_features(x, mean, std), expected, rtol=1e-6, atol=1e-6)
    # Some values were clipped on each side, so both branches ran.
    assert (np.abs((x - mean) / std) > 3).any()


# --- method §1/§7: CCC metric; method §6.7: CCC loss --------------------------------
def numpy_ccc(x, y):
    mx, my = np.mean(x), np.mean(y)
    sx, sy = np.std(x), np.std(y)
    rho = np.mean((x - mx) * (y - my)) / (sx * sy)
    return 2 * rho * sx * sy / (sx ** 2 + sy ** 2 + (mx - my) ** 2)


def test_ccc_metric_matches_numpy_population_formula():
    rng = np.random.default_rng(3)
    for n in (5, 50, 1000):
        y = rng.normal(4, 1.2, n)
        x = 0.6 * y + rng.normal(0.5, 0.8, n)
        assert utils.ccc_metric(x, y) == pytest.approx(numpy_ccc(x, y), rel=1e-12, abs=1e-12)
    # Population statistics: differs from the unbiased-variance value on a small sample.
    x, y = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.5, 5.0])
    unbiased = 2 * np.cov(x, y)[0, 1] / (np.var(x, ddof=1) + np.var(y, ddof=1) + (x.mean() - y.mean()) ** 2)
    assert utils.ccc_metric(x, y) == pytest.approx(numpy_ccc(x, y), rel=1e-12)
    assert utils.ccc_metric(x, y) != pytest.approx(unbiased, rel=1e-6)


def test_ccc_metric_perfect_and_shifted():
    y = np.array([1.0, 3.0, 2.5, 6.0, 4.2])
    assert utils.ccc_metric(y, y) == pytest.approx(1.0, abs=1e-12)
    assert utils.ccc_metric(-y + 7, y) < 0
    # A constant shift lowers the CCC below 1 although the correlation is 1.
    assert utils.ccc_metric(y + 1, y) == pytest.approx(numpy_ccc(y + 1, y), rel=1e-12)
    assert utils.ccc_metric(y + 1, y) < 1


def test_ccc_loss_is_one_minus_ccc_with_unbiased_variance():
    rng = np.random.default_rng(4)
    y = rng.normal(0, 1, 44)
    p = 0.5 * y + rng.normal(0.3, 0.7, 44)
    n = len(y)
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    expected = 1 - 2 * cov / (np.var(y, ddof=1) + np.var(p, ddof=1) + (y.mean() - p.mean()) ** 2)
    got = utils.ccc_loss(torch.tensor(p, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert n == 44
    # Shapes (turns, 11) and (turns·11,) are flattened the same way.
    got2 = utils.ccc_loss(torch.tensor(p, dtype=torch.float32).reshape(4, 11),
                          torch.tensor(y, dtype=torch.float32))
    assert float(got2) == pytest.approx(float(got), abs=1e-7)
    # Perfect agreement: mean-based covariance over unbiased variances leaves 1/n
    # (the method §6.7 formula, as in the original), not 0.
    t = torch.tensor(y, dtype=torch.float32)
    assert float(utils.ccc_loss(t, t)) == pytest.approx(1 / n, rel=1e-5)


def test_ccc_loss_gradient_moves_prediction_toward_label():
    y = torch.tensor([-1.0, -0.5, 0.0, 0.4, 1.0, 1.5])
    p = y.clone()
    p[1] += 1.0   # over-predicted
    p[4] -= 1.0   # under-predicted
    p.requires_grad_(True)
    loss = utils.ccc_loss(p, y)
    loss.backward()
    assert p.grad[1] > 0   # descent lowers it toward its label
    assert p.grad[4] < 0   # descent raises it toward its label
    with torch.no_grad():
        stepped = p - 0.05 * p.grad
        new_loss = utils.ccc_loss(stepped, y)
    assert float(new_loss) < float(loss.detach())
    assert abs(float(stepped[1] - y[1])) < 1.0
    assert abs(float(stepped[4] - y[4])) < 1.0


# --- method §6.5: sentence-level uniform sampling ------------------------------------
def constructed_assignment():
    """4 turns × 11 chunks, K = 5: cluster 0 huge, 1 and 2 small, 3 and 4 unused."""
    turns = [
        [0] * 11,                       # only the big cluster
        [0] * 10 + [1],                 # one chunk of cluster 1
        [0] * 8 + [1, 2, 2],            # cluster 1 and two of cluster 2
        [0] * 11,
    ]
    return np.array(turns).reshape(-1)


def hand_weights():
    sizes = {0: 11 + 10 + 8 + 11, 1: 2, 2: 2}
    cw = {k: 1.0 / v for k, v in sizes.items()}
    total = sum(cw.values())
    cw = {k: v / total for k, v in cw.items()}
    turn = np.array([
        11 * cw[0],
        10 * cw[0] + cw[1],
        8 * cw[0] + cw[1] + 2 * cw[2],
        11 * cw[0],
    ])
    return turn / turn.sum()


def test_sentence_uniform_weights_hand_computed():
    a = constructed_assignment()
    w = utils.sentence_uniform_weights(a, 5)
    np.testing.assert_allclose(w, hand_weights(), rtol=1e-12)
    assert w.sum() == pytest.approx(1.0)
    assert np.isfinite(w).all()
    # The rare clusters lift the turns that hold them.
    assert w[2] > w[1] > w[0] == pytest.approx(w[3])


def test_sentence_uniform_weights_with_empty_clusters_are_finite():
    rng = np.random.default_rng(5)
    a = rng.choice([1, 4, 7], size=6 * 11)      # clusters 0, 2, 3, 5, 6, 8, 9 empty
    w = utils.sentence_uniform_weights(a, 10)
    assert np.isfinite(w).all()
    assert (w > 0).all()
    assert w.sum() == pytest.approx(1.0)
    # Same as computing it over the three used clusters only.
    remap = {1: 0, 4: 1, 7: 2}
    w3 = utils.sentence_uniform_weights(np.array([remap[v] for v in a]), 3)
    np.testing.assert_allclose(w, w3, rtol=1e-12)


def test_sentence_uniform_sample_frequencies_match_weights():
    a = constructed_assignment()
    expected = hand_weights()
    rng = np.random.default_rng(6)
    counts = np.zeros(4)
    draws = 0
    for _ in range(5000):
        drawn = utils.sentence_uniform_sample(a, 5, rng)
        assert len(drawn) == 4
        assert drawn.min() >= 0 and drawn.max() < 4
        counts += np.bincount(drawn, minlength=4)
        draws += len(drawn)
    np.testing.assert_allclose(counts / draws, expected, atol=0.01)


def test_sentence_uniform_sample_is_seeded():
    a = np.random.default_rng(7).integers(0, 6, 30 * 11)
    d1 = utils.sentence_uniform_sample(a, 6, np.random.default_rng(11))
    d2 = utils.sentence_uniform_sample(a, 6, np.random.default_rng(11))
    np.testing.assert_array_equal(d1, d2)
    assert len(d1) == 30


# --- labels and feature files ----------------------------------------------------------
def write_labels(path):
    rows = [
        ("MSP-PODCAST_0001_0001.wav", "Train", 1.5, 2.0, 3.0),
        ("MSP-PODCAST_0001_0002.wav", "Validation", 2.5, 3.0, 4.0),
        ("MSP-PODCAST_0001_0003.wav", "Train", 6.5, 5.0, 4.5),
        ("MSP-PODCAST_0002_0004.wav", "Test1", 4.0, 4.0, 4.0),
        ("MSP-PODCAST_0002_0005.wav", "Test2", 3.0, 3.0, 3.0),
        ("MSP-PODCAST_0002_0006.wav", "Train", 3.25, 1.0, 7.0),
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        for name, split, act, val, dom in rows:
            w.writerow([name, "N", act, val, dom, 1, "Male", split])
    return path


def test_read_labels_filters_split_and_strips_extension(tmp_path):
    path = write_labels(str(tmp_path / "labels_concensus.csv"))
    stems, labels = read_labels(path, "Train", ("Act", "Val", "Dom"))
    assert stems == ["MSP-PODCAST_0001_0001", "MSP-PODCAST_0001_0003", "MSP-PODCAST_0002_0006"]
    np.testing.assert_array_equal(labels["Act"], [1.5, 6.5, 3.25])
    np.testing.assert_array_equal(labels["Val"], [2.0, 5.0, 1.0])
    np.testing.assert_array_equal(labels["Dom"], [3.0, 4.5, 7.0])
    stems, labels = read_labels(path, "Validation", ("Dom",))
    assert stems == ["MSP-PODCAST_0001_0002"] and list(labels) == ["Dom"]
    np.testing.assert_array_equal(labels["Dom"], [4.0])
    stems, labels = read_labels(path, "Test1")
    assert stems == ["MSP-PODCAST_0002_0004"] and labels == {}


def test_read_labels_errors(tmp_path):
    path = write_labels(str(tmp_path / "labels_concensus.csv"))
    with pytest.raises(UserError, match="no rows in the split 'Test3'"):
        read_labels(path, "Test3")
    with pytest.raises(UserError, match="not found"):
        read_labels(str(tmp_path / "nope.csv"), "Train")
    bad = tmp_path / "bad.csv"
    bad.write_text("FileName,Split_Set\nA.wav,Train\n")
    with pytest.raises(UserError, match="EmoAct"):
        read_labels(str(bad), "Train", ("Act",))


def test_feature_paths_and_missing_count(tmp_path):
    stems = [f"MSP-PODCAST_0001_{i:04d}" for i in range(5)]
    for s in stems[:3]:
        utils.save_mat(str(tmp_path / (s + ".mat")), "Audio_data", np.zeros((70, 128), np.float32))
    paths = feature_paths(str(tmp_path), stems[:3])
    assert paths == [os.path.join(str(tmp_path), s + ".mat") for s in stems[:3]]
    with pytest.raises(UserError) as err:
        feature_paths(str(tmp_path), stems)
    msg = str(err.value)
    assert "2 of 5" in msg
    assert "MSP-PODCAST_0001_0003.mat" in msg and "MSP-PODCAST_0001_0004.mat" in msg


# --- method §3: mel spectrogram -------------------------------------------------------
def harmonic_tone(seconds=1.3):
    t = np.arange(int(seconds * SR)) / SR
    y = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 880 * t + 0.3) \
        + 0.1 * np.sin(2 * np.pi * 1320 * t + 1.1)
    # An onset at the very start, so the edge frames depend on the padding.
    y[:200] += np.linspace(0.3, 0, 200)
    return y.astype(np.float32)


def reference_mel(y, pad_mode="reflect"):
    import librosa

    peak = np.max(np.abs(y))
    return librosa.feature.melspectrogram(
        y=y / peak, sr=16000, n_fft=512, hop_length=256, n_mels=128, pad_mode=pad_mode,
        center=True, power=2.0, norm="slaney", htk=False).T


def test_mel_spectrogram_equals_librosa_reflect():
    y = harmonic_tone()
    mel = features.mel_spectrogram(y)
    assert mel.shape == (1 + len(y) // 256, 128)
    assert mel.dtype == np.float32
    ref = reference_mel(y)
    # The filterbank is built once and reused: librosa's result to float rounding, and
    # the same bytes on every call.
    np.testing.assert_allclose(mel, ref, rtol=1e-6, atol=1e-7 * ref.max())
    np.testing.assert_array_equal(features.mel_spectrogram(y), mel)
    # Peak normalisation: scaling the input changes nothing.
    np.testing.assert_allclose(features.mel_spectrogram(0.01 * y), mel, rtol=1e-4, atol=1e-7 * ref.max())
    # The 440 Hz fundamental's band carries the most energy in the middle frames.
    import librosa

    freqs = librosa.mel_frequencies(n_mels=128, fmin=0, fmax=8000, htk=False)
    peak_band = int(np.argmax(mel[len(mel) // 2]))
    assert abs(freqs[peak_band] - 440) < 40


def test_mel_spectrogram_pad_mode_matters_at_edges():
    y = harmonic_tone()
    mel = features.mel_spectrogram(y)
    const = reference_mel(y, pad_mode="constant")
    # Interior frames do not see the padding: identical.
    np.testing.assert_allclose(mel[2:-2], const[2:-2], rtol=1e-5, atol=1e-7 * mel.max())
    # Edge frames do: reflect differs from zero padding.
    assert not np.allclose(mel[0], const[0], rtol=1e-3)
    assert not np.allclose(mel[-1], const[-1], rtol=1e-3)


def test_mel_spectrogram_refuses_silence():
    with pytest.raises(ValueError, match="silent"):
        features.mel_spectrogram(np.zeros(4000, np.float32))


def test_feat_extract_writes_audio_data_mat(tmp_path):
    audio = tmp_path / "audio" / "sub"
    audio.mkdir(parents=True)
    y = harmonic_tone()
    sf.write(str(audio / "tone440.wav"), y, SR, subtype="FLOAT")
    out = tmp_path / "features"
    assert feat_extract.main(["--input", str(tmp_path / "audio"), "--output", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["tone440.mat"]
    data = scipy.io.loadmat(str(out / "tone440.mat"))["Audio_data"]
    assert data.shape == (1 + len(y) // 256, 128)
    ref = reference_mel(y)
    np.testing.assert_allclose(data, ref, rtol=1e-5, atol=1e-7 * ref.max())
    np.testing.assert_array_equal(data, features.mel_spectrogram(y))


# --- method §3: NormTerm -------------------------------------------------------------------
def test_norm_term_files_shapes_and_values(tiny_corpus):
    norm = tiny_corpus["norm"]
    names = ["feat_norm_means.mat", "feat_norm_stds.mat"] + \
        [f"{e}_norm_{s}.mat" for e in ("act", "dom", "val") for s in ("means", "stds")]
    assert sorted(os.listdir(norm)) == sorted(names)
    mats = {n: scipy.io.loadmat(os.path.join(norm, n)) for n in names}
    for n, m in mats.items():
        assert "normal_para" in m
        assert m["normal_para"].shape == ((1, 128) if n.startswith("feat") else (1, 1)), n

    # Reference: the Train rows of the labels file, their feature files concatenated.
    with open(tiny_corpus["labels"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Split_Set"] == "Train"]
    assert len(rows) == 16
    frames = np.concatenate([
        scipy.io.loadmat(os.path.join(tiny_corpus["features"], r["FileName"][:-4] + ".mat"))["Audio_data"]
        for r in rows]).astype(np.float64)
    np.testing.assert_allclose(mats["feat_norm_means.mat"]["normal_para"][0], frames.mean(axis=0),
                               rtol=1e-9)
    np.testing.assert_allclose(mats["feat_norm_stds.mat"]["normal_para"][0], frames.std(axis=0),
                               rtol=1e-9)
    for emo, col in (("act", "EmoAct"), ("dom", "EmoDom"), ("val", "EmoVal")):
        y = np.array([float(r[col]) for r in rows])
        assert mats[f"{emo}_norm_means.mat"]["normal_para"][0, 0] == pytest.approx(np.mean(y), rel=1e-12)
        assert mats[f"{emo}_norm_stds.mat"]["normal_para"][0, 0] == pytest.approx(np.std(y), rel=1e-12)

    # load_norm_term reads the same numbers back.
    term = features.load_norm_term(norm)
    np.testing.assert_allclose(term["features"].mean, frames.mean(axis=0), rtol=1e-9)
    assert term["Val_std"] == pytest.approx(np.std([float(r["EmoVal"]) for r in rows]), rel=1e-12)


def test_load_norm_term_names_missing_files(tmp_path):
    with pytest.raises(UserError, match="feat_norm_means.mat"):
        features.load_norm_term(str(tmp_path))
