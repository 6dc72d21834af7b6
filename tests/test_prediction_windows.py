"""prediction_process.py: emotion over time (--window, --hop), plots, turn embeddings, audio
formats, short and long recordings, and reading a long recording one window at a time."""
import csv
import io
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from support import ROOT
from support.audio import SR, voice, write_audio
from support.files import read_csv
from support.models import save_models
from support.prediction_setup import (BATCH, EPOCHS, K, MT, SCORES, as_read, loaded_models, predict,
                                      scores_by_name)

import prediction_process  # noqa: E402
from deepemocluster import prediction  # noqa: E402
from deepemocluster import time_windows  # noqa: E402
from deepemocluster.compute import Settings  # noqa: E402
from deepemocluster.features import chunk_turn, extract_features, load_norm_term  # noqa: E402
from model import checkpoint_name, predict_batch  # noqa: E402
from utils import EMOTIONS, FRAMES_PER_CHUNK, run_cli  # noqa: E402

# --- window planning ------------------------------------------------------------------------------------
def seconds_of(spans, rate=SR):
    return [(s / rate, e / rate) for s, e in spans]


@pytest.mark.parametrize("length, window, hop, expected", [
    (2.5, 4.0, 4.0, [(0, 2.5)]),                                         # shorter than a window
    (8.0, 2.0, 2.0, [(0, 2), (2, 4), (4, 6), (6, 8)]),                    # exact multiple
    (6.5, 2.0, 2.0, [(0, 2), (2, 4), (4, 6.5)]),                          # last 0.5 s merged
    (7.0, 2.0, 2.0, [(0, 2), (2, 4), (4, 6), (6, 7)]),                    # last 1.0 s kept
    (5.0, 2.0, 1.0, [(0, 2), (1, 3), (2, 4), (3, 5)]),                    # overlapping
    (5.3, 2.0, 1.5, [(0, 2), (1.5, 3.5), (3, 5.3)]),                      # overlapping, last merged
    (10.0, 2.0, 3.0, [(0, 2), (3, 5), (6, 8), (9, 10)]),                  # gaps between windows
    (0.5, 2.0, 2.0, [(0, 0.5)]),                                          # shorter than a chunk
])
def test_window_spans(length, window, hop, expected):
    spans = time_windows.plan_windows(int(length * SR), SR, window, hop)
    assert seconds_of(spans) == [(float(s), float(e)) for s, e in expected]


def test_a_last_piece_of_exactly_one_chunk_is_kept():
    chunk = FRAMES_PER_CHUNK * 256   # 15872 samples at 16 kHz = 0.992 s
    assert time_windows.plan_windows(32000 + chunk, SR, 2.0, 2.0) == [(0, 32000), (32000, 32000 + chunk)]
    assert time_windows.plan_windows(32000 + chunk - 1, SR, 2.0, 2.0) == [(0, 32000 + chunk - 1)]
    rate = 44100                     # 0.992 s = 43747.2 samples: 43747 is shorter, 43748 is not
    assert len(time_windows.plan_windows(2 * rate + 43747, rate, 2.0, 2.0)) == 1
    assert time_windows.plan_windows(2 * rate + 43748, rate, 2.0, 2.0) == [(0, 2 * rate),
                                                                      (2 * rate, 2 * rate + 43748)]


# --- windows predicted as turns ---------------------------------------------------------------------
def test_each_window_is_predicted_as_a_file_holding_only_its_samples(setup, tmp_path):
    """Window rows (Start, End) of files of several lengths, rates and channel counts; each
    window's scores equal the plain prediction of a WAV holding exactly its samples."""
    audio = tmp_path / "in"
    files = {"a_short.wav": (1.7, SR, 1, {}), "c_merge.wav": (6.5, SR, 1, {}),
             "d_stereo44k.wav": (5.3, 44100, 2, {}), "e_float.wav": (4.2, 22050, 1, {"subtype": "FLOAT"})}
    for i, (name, (length, rate, ch, kw)) in enumerate(files.items()):
        write_audio(str(audio / name), voice(length, rate, ch, seed=i), rate, **kw)
    out = tmp_path / "windows.csv"
    assert predict(setup, audio, out, "--window", 2, "--hop", 1.5) == 0
    rows = read_csv(out)
    assert rows[0] == ["File_Name", "Start", "End"] + SCORES
    expected_spans = {
        "a_short.wav": [(0.0, 1.7)],
        "c_merge.wav": [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (4.5, 6.5)],
        "d_stereo44k.wav": [(0.0, 2.0), (1.5, 3.5), (3.0, 5.3)],          # 4.5–5.3 merged
        "e_float.wav": [(0.0, 2.0), (1.5, 3.5), (3.0, 4.2)],
    }
    assert [(r[0], float(r[1]), float(r[2])) for r in rows[1:]] == [
        (name, s, e) for name, spans in expected_spans.items() for s, e in spans]

    # Each window's exact samples, written as a file of the same format, predicted plainly.
    cut = tmp_path / "cut"
    for name, (length, rate, ch, kw) in files.items():
        y, _ = as_read(str(audio / name))
        spans = time_windows.plan_windows(len(y), rate, 2.0, 1.5)
        for s, e in spans:
            write_audio(str(cut / f"{name}@{s / rate:.3f}.wav"), y[s:e], rate,
                        subtype=kw.get("subtype", "PCM_16"))
    plain = tmp_path / "plain.csv"
    assert predict(setup, cut, plain) == 0
    whole = scores_by_name(plain)
    for r in rows[1:]:
        np.testing.assert_allclose([float(v) for v in r[3:]], whole[f"{r[0]}@{float(r[1]):.3f}.wav"],
                                   rtol=0, atol=1e-5)


def test_without_window_the_csv_is_the_original_one_row_per_file(setup, tmp_path):
    """Header and rows exactly as before --window existed: File_Name and the three scores, one row
    per file in sorted walk order, each the model run on the file's 11 chunks."""
    audio = tmp_path / "in"
    for i, name in enumerate(["b.wav", "a.wav", os.path.join("sub", "c.wav")]):
        write_audio(str(audio / name), voice(2.0 + i, seed=i))
    out = tmp_path / "pred.csv"
    assert predict(setup, audio, out) == 0
    paths = [str(audio / n) for n in ("a.wav", "b.wav", os.path.join("sub", "c.wav"))]
    norm = load_norm_term(setup["norm"])
    chunks = torch.from_numpy(np.stack([chunk_turn(norm["features"].apply(extract_features(p))) for p in paths]))
    preds = predict_batch(loaded_models(setup), chunks, Settings(torch.device("cpu")))
    denorm = [p * norm[f"{e}_std"] + norm[f"{e}_mean"] for p, e in zip(preds, EMOTIONS)]
    expected = io.StringIO(newline="")
    w = csv.writer(expected)
    w.writerow(["File_Name"] + SCORES)
    w.writerows((os.path.basename(p),) + tuple(float(d[j]) for d in denorm) for j, p in enumerate(paths))
    got = open(out, newline="").read()
    assert got.splitlines()[0] == "File_Name,Aro-Score,Dom-Score,Val-Score"
    assert [r[0] for r in read_csv(out)[1:]] == ["a.wav", "b.wav", "c.wav"]
    assert got == expected.getvalue()


def test_a_silent_window_is_reported_and_left_out(setup, tmp_path, capsys):
    audio = tmp_path / "in"
    y = voice(6.0, seed=3)
    y[2 * SR:4 * SR] = 0
    write_audio(str(audio / "gap.wav"), y)
    out = tmp_path / "pred.csv"
    assert predict(setup, audio, out, "--window", 2) == 1
    assert [(r[1], r[2]) for r in read_csv(out)[1:]] == [("0.0", "2.0"), ("4.0", "6.0")]
    errors = read_csv(tmp_path / "pred_errors.csv")
    assert errors == [["File_Name", "Reason"],
                      ["gap.wav", "window 2.000–4.000 s: silent audio (peak amplitude is 0)"]]
    assert "1 file(s) or window(s) could not be predicted" in capsys.readouterr().out


# --- embeddings and plots ------------------------------------------------------------------------------
def test_embeddings_are_the_turn_embeddings_of_each_row(setup, tmp_path):
    audio = tmp_path / "in"
    write_audio(str(audio / "a.wav"), voice(4.0, seed=1))
    write_audio(str(audio / "b.wav"), voice(1.5, 44100, 2, seed=2), 44100)
    out, emb_dir = tmp_path / "pred.csv", tmp_path / "emb"
    assert predict(setup, audio, out, "--window", 2, "--embeddings", emb_dir) == 0
    rows = read_csv(out)[1:]
    index = read_csv(emb_dir / "index.csv")
    assert index[0] == ["row", "File_Name", "Start", "End"]
    assert index[1:] == [[str(i)] + r[:3] for i, r in enumerate(rows)]
    vectors = {e: np.load(emb_dir / f"embeddings_{e}.npy") for e in EMOTIONS}
    assert all(v.dtype == np.float32 and v.shape == (len(rows), 256) for v in vectors.values())

    # The same windows' chunks through predict_batch(..., embeddings=True).
    norm = load_norm_term(setup["norm"])
    chunks = []
    for name in ("a.wav", "b.wav"):
        y, rate = as_read(str(audio / name))
        for s, e in time_windows.plan_windows(len(y), rate, 2.0, 2.0):
            feat = time_windows.window_features(y[s:e].mean(axis=1), rate)
            chunks.append(chunk_turn(norm["features"].apply(feat)))
    assert len(chunks) == len(rows)
    expected = predict_batch(loaded_models(setup), torch.from_numpy(np.stack(chunks)),
                             Settings(torch.device("cpu")), embeddings=True)
    for emo, (pred, emb) in zip(EMOTIONS, expected):
        np.testing.assert_allclose(vectors[emo], emb, rtol=0, atol=1e-5)
        col = 3 + EMOTIONS.index(emo)
        np.testing.assert_allclose([float(r[col]) for r in rows],
                                   pred * norm[f"{emo}_std"] + norm[f"{emo}_mean"], rtol=0, atol=1e-5)

    # Without --window: one row per file, the index without Start and End.
    assert predict(setup, audio, tmp_path / "files.csv", "--embeddings", tmp_path / "emb2") == 0
    assert read_csv(tmp_path / "emb2" / "index.csv") == [["row", "File_Name"], ["0", "a.wav"], ["1", "b.wav"]]
    assert np.load(tmp_path / "emb2" / "embeddings_Val.npy").shape == (2, 256)


def test_plot_writes_one_png_per_file(setup, tmp_path, capsys):
    import matplotlib.image

    audio = tmp_path / "in"
    write_audio(str(audio / "talk.wav"), voice(5.0, seed=4))
    write_audio(str(audio / "sub" / "other.flac"), voice(3.0, seed=5), subtype="PCM_16")
    plots = tmp_path / "plots"
    assert predict(setup, audio, tmp_path / "pred.csv", "--window", 2, "--hop", 1, "--plot", plots) == 0
    assert sorted(os.listdir(plots)) == ["other.flac.png", "talk.wav.png"]
    for name in os.listdir(plots):
        with open(plots / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(str(plots / name))
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert "2 plot(s)" in capsys.readouterr().out


# --- flags ------------------------------------------------------------------------------------------------
def test_three_unlabel_sizes_pick_each_attributes_checkpoint(setup, tmp_path, capsys):
    model_dir = str(tmp_path / "ssl")
    save_models(model_dir, MT, [K, K, 3], [50, 60, 7])
    audio = tmp_path / "in"
    write_audio(str(audio / "a.wav"), voice(2.0))
    argv = ["--input", audio, "--output", tmp_path / "pred.csv", "-ep", EPOCHS, "-batch", BATCH,
            "-mt", MT, "--model-dir", model_dir, "--norm-dir", setup["norm"]]
    assert prediction_process.main([str(a) for a in argv + ["-nc", f"{K},{K},3",
                                                             "-unlabel", "50,60,7"]]) == 0
    with pytest.raises(SystemExit):
        run_cli(lambda: prediction_process.main([str(a) for a in argv + ["-nc", f"{K},{K},3",
                                                                          "-unlabel", "50,60,8"]]))
    missing = checkpoint_name(EPOCHS, BATCH, 3, "Val", MT, 8)
    assert f"checkpoint not found: {os.path.join(model_dir, missing)}" in capsys.readouterr().err


# --- audio formats --------------------------------------------------------------------------------------
# With the shipped demo models (trained, so their scores follow the audio), measured on these
# 4 files and on 8 others like them (16–48 kHz, mono and stereo): FLAC of the same 16-bit samples
# gives the WAV's scores exactly; OGG Vorbis differs from the WAV by up to 0.043 here (0.074 on
# the 8) and MP3 by up to 0.029 (0.035) on the 1–7 scale (lossy coding), while the scores of
# different files spread over 0.3–0.8.
FORMAT_TOLERANCE = {"flac": 1e-5, "ogg": 0.1, "mp3": 0.1}
SHIPPED = ["-ep", 30, "-batch", 64, "-nc", 10, "-mt", "Temp-Triplet",
           "--model-dir", os.path.join(ROOT, "trained_models"), "--norm-dir", os.path.join(ROOT, "NormTerm")]


def test_flac_ogg_and_mp3_are_predicted_like_the_wav(tmp_path, capsys):
    audio = tmp_path / "in"
    for i, (rate, channels) in enumerate([(16000, 1), (22050, 2), (44100, 1), (48000, 2)]):
        y = np.round(voice(3.0 + 0.5 * i, rate, channels, seed=10 + i) * 32767).astype(np.int16)
        for ext in ("wav", "flac", "ogg", "mp3"):     # the same 16-bit samples in every format
            # (given as floats: libsndfile 1.2.2 encodes 16-bit stereo input to MP3 wrongly)
            write_audio(str(audio / f"s{i}.{ext}"), y if ext in ("wav", "flac") else y / 32768, rate)
    (audio / "notes.txt").write_text("not audio\n")
    out = tmp_path / "pred.csv"
    assert prediction_process.main(["--input", str(audio), "--output", str(out), *map(str, SHIPPED)]) == 0
    assert "16 of 16 file(s) predicted" in capsys.readouterr().out
    scores = scores_by_name(out)
    wavs = np.array([scores[f"s{i}.wav"] for i in range(4)])
    assert np.ptp(wavs, axis=0).max() > 0.2          # the scores follow the audio
    for i in range(4):
        for ext, tol in FORMAT_TOLERANCE.items():
            np.testing.assert_allclose(scores[f"s{i}.{ext}"], wavs[i], rtol=0, atol=tol, err_msg=ext)


def test_windows_of_mp3_and_ogg_are_the_whole_file_samples(setup, tmp_path):
    """libsndfile does not seek sample-accurately in MP3: windows are read forward, and each
    equals the same span of the file decoded whole."""
    audio, cut = tmp_path / "in", tmp_path / "cut"
    for ext in ("mp3", "ogg"):
        write_audio(str(audio / f"a.{ext}"), voice(4.5, 22050, 2, seed=6), 22050)
        y, rate = as_read(str(audio / f"a.{ext}"))
        for s, e in time_windows.plan_windows(len(y), rate, 2.0, 1.5):
            write_audio(str(cut / f"a.{ext}@{s / rate:.3f}.wav"), y[s:e], rate, subtype="FLOAT")
    out = tmp_path / "pred.csv"
    assert predict(setup, audio, out, "--window", 2, "--hop", 1.5) == 0
    assert predict(setup, cut, tmp_path / "plain.csv") == 0
    plain = scores_by_name(tmp_path / "plain.csv")
    rows = read_csv(out)[1:]
    spans = (("0.0", "2.0"), ("1.5", "3.5"), ("3.0", "4.5"))
    assert [tuple(r[:3]) for r in rows] == [(f"a.{ext}", s, e) for ext in ("mp3", "ogg") for s, e in spans]
    for r in rows:
        np.testing.assert_allclose([float(v) for v in r[3:]], plain[f"{r[0]}@{float(r[1]):.3f}.wav"],
                                   rtol=0, atol=1e-5)


# --- short and long recordings -----------------------------------------------------------------------
def test_short_files_get_the_originals_chunking_and_the_warning_says_which(setup, tmp_path):
    audio = tmp_path / "in"
    write_audio(str(audio / "whole57.wav"), voice(56 * 256 / SR, seed=7))   # 57 frames
    write_audio(str(audio / "pad41.wav"), voice(40 * 256 / SR, seed=8))     # 41 frames
    out = tmp_path / "pred.csv"
    with pytest.warns(UserWarning) as caught:
        assert predict(setup, audio, out) == 0
    text = " ".join(str(w.message) for w in caught)
    assert "1 file(s) of 53–61 frames were chunked as the original does (every chunk the whole, " \
           "unpadded turn), e.g. whole57.wav" in text
    assert "1 file(s) shorter than 62 frames were padded with zeros to one chunk" in text
    assert "e.g. pad41.wav" in text
    norm = load_norm_term(setup["norm"])
    models = loaded_models(setup)
    scores = scores_by_name(out)
    for name, frames in (("whole57.wav", 57), ("pad41.wav", 41)):
        feat = norm["features"].apply(extract_features(str(audio / name)))
        assert feat.shape[0] == frames
        if frames >= 53:
            chunks = np.repeat(feat[None], 11, axis=0)                   # (11, 57, 128)
        else:
            chunks = chunk_turn(feat)                                     # zero-padded, (11, 62, 128)
            assert chunks.shape == (11, 62, 128) and not chunks[0, frames:].any()
        preds = predict_batch(models, torch.from_numpy(chunks[None]), Settings(torch.device("cpu")))
        expected = [float(p[0]) * norm[f"{e}_std"] + norm[f"{e}_mean"] for p, e in zip(preds, EMOTIONS)]
        np.testing.assert_allclose(scores[name], expected, rtol=0, atol=1e-5)


def test_long_files_without_window_are_counted_with_the_longest(setup, tmp_path, capsys):
    audio = tmp_path / "in"
    write_audio(str(audio / "long_a.wav"), voice(12.0, seed=1))
    write_audio(str(audio / "long_b.flac"), voice(13.5, seed=2), subtype="PCM_16")
    write_audio(str(audio / "short.wav"), voice(3.0, seed=3))
    (audio / "readme.md").write_text("x\n")
    assert predict(setup, audio, tmp_path / "pred.csv") == 0
    out = capsys.readouterr().out
    assert "3 of 3 file(s) predicted" in out
    assert "1 non-audio file(s) skipped" in out
    assert "warning: 2 file(s) longer than 11 s" in out
    assert "the longest is long_b.flac (13.5 s)" in out and "--window 11" in out
    assert "shorter than 2.75 s" not in out          # 3 s and more: no short-recording warning
    assert predict(setup, audio, tmp_path / "win.csv", "--window", 11) == 0
    out = capsys.readouterr().out
    assert "longer than" not in out and "5 window(s) of 3 of 3 file(s) predicted" in out


def test_a_long_recording_is_read_one_window_at_a_time(setup, tmp_path, monkeypatch):
    """Ten minutes of audio: no read asks for more than one window of samples, the file is
    never read whole, and the windows share model calls."""
    rng = np.random.default_rng(0)
    minutes = 10
    y = np.concatenate([voice(60.0) * (1 - 0.05 * i) for i in range(minutes)])
    y += 0.001 * rng.standard_normal(len(y)).astype(np.float32)
    audio = tmp_path / "in"
    write_audio(str(audio / "podcast.wav"), y, subtype="PCM_16")
    window = 60.0
    reads, batches = [], []
    real_read = time_windows.ForwardReader.read

    def spy_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the whole file was read")

    real_predict = prediction.predict_batch

    def spy_predict(models, chunks, *args, **kwargs):
        batches.append(chunks.shape[0])
        return real_predict(models, chunks, *args, **kwargs)

    monkeypatch.setattr(time_windows.ForwardReader, "read", spy_read)
    monkeypatch.setattr(sf, "read", whole_file_read)
    monkeypatch.setattr(prediction, "extract_features", whole_file_read)
    monkeypatch.setattr(prediction, "predict_batch", spy_predict)
    out = tmp_path / "pred.csv"
    assert predict(setup, audio, out, "--window", window) == 0
    rows = read_csv(out)[1:]
    assert [(float(r[1]), float(r[2])) for r in rows] == [(60.0 * i, 60.0 * (i + 1)) for i in range(minutes)]
    assert reads and 0 < max(reads) <= window * SR
    assert sum(reads) == len(y)
    assert batches == [minutes]


def test_recordings_shorter_than_any_training_turn_are_counted_with_the_shortest(setup, tmp_path, capsys):
    """Files (and windows) under 2.75 s, the shortest MSP-Podcast turn, are predicted and
    counted in one warning naming the shortest; 2.75 s itself is not short (and files of 3 s
    and more get no warning: test_long_files_without_window_are_counted_with_the_longest)."""
    from utils import SHORTEST_TRAINING_TURN_SECONDS

    assert SHORTEST_TRAINING_TURN_SECONDS == 2.75
    audio = tmp_path / "in"
    write_audio(str(audio / "a_two.wav"), voice(2.0, seed=1))
    write_audio(str(audio / "b_tiny.wav"), voice(1.2, seed=2))
    write_audio(str(audio / "c_edge.wav"), voice(2.75, seed=3))
    write_audio(str(audio / "d_long.wav"), voice(12.5, seed=4))
    assert predict(setup, audio, tmp_path / "pred.csv") == 0
    out = capsys.readouterr().out
    assert [r[0] for r in read_csv(tmp_path / "pred.csv")[1:]] == ["a_two.wav", "b_tiny.wav", "c_edge.wav",
                                                                   "d_long.wav"]
    assert ("warning: 2 file(s) shorter than 2.75 s, the shortest turn the models were trained on, were "
            "predicted all the same; the shortest is b_tiny.wav (1.20 s)\n") in out
    # Windows of 11 s: d_long's last window (11–12.5 s) and the short files' single windows.
    assert predict(setup, audio, tmp_path / "win.csv", "--window", 11) == 0
    out = capsys.readouterr().out
    assert ("warning: 3 window(s) shorter than 2.75 s, the shortest turn the models were trained on, were "
            "predicted all the same; the shortest is b_tiny.wav, window 0.000–1.200 s (1.20 s)\n") in out
    # Windows of 2 s: every one short but c_edge's (its 0.75 s remainder merged: 0–2.75 s), and
    # d_long's 0.5 s remainder merged into its last window (10–12.5 s).
    assert predict(setup, audio, tmp_path / "win2.csv", "--window", 2) == 0
    spans = [(r[0], float(r[1]), float(r[2])) for r in read_csv(tmp_path / "win2.csv")[1:]]
    assert ("c_edge.wav", 0.0, 2.75) in spans and ("d_long.wav", 10.0, 12.5) in spans and len(spans) == 9
    assert ("warning: 8 window(s) shorter than 2.75 s, the shortest turn the models were trained on, were "
            "predicted all the same (--window 2 is shorter than that); the shortest is b_tiny.wav, window "
            "0.000–1.200 s (1.20 s)\n") in capsys.readouterr().out
