"""prediction_process.py --turns (vad, a CSV, an RTTM file): every speaking turn predicted as a
file holding only its samples, Start and End exact to the sample, files without speech
reported, embeddings and plots per turn, one-line errors, a long recording read in blocks;
and the Python (Predictor) and ONNX routes equal to the command."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import export_onnx
import prediction_process
from support import ROOT
from support.audio import SR, write_audio
from support.docs import deployment_examples
from support.files import read_csv
from demo import speech
from deepemocluster import turn_audio, vad
from deepemocluster.predictor import Predictor
from deepemocluster.time_windows import ForwardReader
from support.prediction_setup import BATCH, EPOCHS, K, MT, as_read, model_flags, predict, scores_by_name
from support.speech import synthetic_recording
from utils import EMOTIONS, UserError, run_cli

SCORES = ["Aro-Score", "Dom-Score", "Val-Score"]
LONGEST_TURN_SAMPLES = 11 * SR


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """The synthetic recording with known pauses at 16 kHz mono, the same at 44.1 kHz in stereo,
    digital silence and room tone (the last two hold no speech)."""
    import librosa

    folder = tmp_path_factory.mktemp("turn_audio")
    y, _ = synthetic_recording()
    write_audio(str(folder / "talk.wav"), y, subtype="PCM_16")
    y44 = librosa.resample(y, orig_sr=SR, target_sr=44100)
    write_audio(str(folder / "talk44.wav"), np.stack([y44, 0.8 * y44], axis=1), 44100, subtype="PCM_16")
    write_audio(str(folder / "silence.wav"), np.zeros(4 * SR, np.float32))
    write_audio(str(folder / "tone.wav"), speech.room_tone(np.random.default_rng(0), 6 * SR).astype(np.float32),
                subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def vad_run(setup, recordings, tmp_path_factory):
    """prediction_process.py --turns vad with --embeddings and --plot: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("vad_run")
    code = predict(setup, recordings, out / "pred.csv", "--turns", "vad", "--embeddings", out / "emb",
                   "--plot", out / "plots")
    return code, out


def cli(argv):
    with pytest.raises(SystemExit) as done:
        run_cli(lambda: prediction_process.main([str(a) for a in argv]))
    return done.value.code


def test_each_turn_is_predicted_as_a_file_holding_only_its_samples(setup, recordings, vad_run, tmp_path, capsys):
    code, out = vad_run
    assert code == 1                                             # two files hold no speech
    rows = read_csv(out / "pred.csv")
    assert rows[0] == ["File_Name", "Start", "End"] + SCORES
    assert read_csv(out / "pred_errors.csv") == [["File_Name", "Reason"], ["silence.wav", "no speech found"],
                                                 ["tone.wav", "no speech found"]]
    assert {r[0] for r in rows[1:]} == {"talk.wav", "talk44.wav"}
    cut = tmp_path / "cut"
    for k, (name, start, end, *_) in enumerate(rows[1:]):
        s16, e16 = round(float(start) * SR), round(float(end) * SR)
        assert (start, end) == (repr(s16 / SR), repr(e16 / SR))  # exact to the sample
        assert 0 < e16 - s16 <= LONGEST_TURN_SAMPLES
        y, rate = as_read(str(recordings / name))
        write_audio(str(cut / f"{k}.wav"), y[round(s16 * rate / SR):round(e16 * rate / SR)], rate, subtype="PCM_16")
    assert predict(setup, cut, tmp_path / "plain.csv") == 0
    plain = scores_by_name(tmp_path / "plain.csv")
    for k, row in enumerate(rows[1:]):
        np.testing.assert_allclose([float(v) for v in row[3:]], plain[f"{k}.wav"], rtol=0, atol=1e-5)
    # The 16 kHz file's turns: those of the detector on its samples.
    y, _ = synthetic_recording()
    detected = turn_audio.detected_turns(vad.SpeechDetector(), turn_audio.array_pieces(y, SR), SR)
    assert [(float(r[1]), float(r[2])) for r in rows[1:] if r[0] == "talk.wav"] == \
        [(t.start / SR, t.end / SR) for t in detected]


def test_embeddings_and_plots_are_per_turn(vad_run):
    import matplotlib.image

    _, out = vad_run
    rows = read_csv(out / "pred.csv")[1:]
    index = read_csv(out / "emb" / "index.csv")
    assert index[0] == ["row", "File_Name", "Start", "End"]
    assert index[1:] == [[str(i)] + r[:3] for i, r in enumerate(rows)]
    for emo in EMOTIONS:
        vectors = np.load(out / "emb" / f"embeddings_{emo}.npy")
        assert vectors.dtype == np.float32 and vectors.shape == (len(rows), 256)
    assert sorted(os.listdir(out / "plots")) == ["talk.wav.png", "talk44.wav.png"]
    image = matplotlib.image.imread(str(out / "plots" / "talk.wav.png"))
    assert image.ndim == 3 and image.shape[0] > 100


def turns_files(rows, folder):
    """The turns of `rows` as a CSV with speakers, an RTTM file and a CSV without speakers."""
    speakers = ["A" if k % 2 == 0 else "B" for k in range(len(rows))]
    with open(folder / "turns.csv", "w") as f:
        f.write("File_Name,Start,End,Speaker\n")
        f.writelines(f"{r[0]},{r[1]},{r[2]},{s}\n" for r, s in zip(rows, speakers))
    with open(folder / "turns.rttm", "w") as f:
        f.writelines(f"SPEAKER {os.path.splitext(r[0])[0]} 1 {r[1]} {float(r[2]) - float(r[1])!r} <NA> <NA> "
                     f"{s} <NA> <NA>\n" for r, s in zip(rows, speakers))
    with open(folder / "plain.csv", "w") as f:
        f.write("File_Name,Start,End\n")
        f.writelines(f"{r[0]},{r[1]},{r[2]}\n" for r in rows)
    return speakers


def test_csv_and_rttm_turns_give_the_detectors_rows_with_speakers(setup, recordings, vad_run, tmp_path):
    _, out = vad_run
    rows = read_csv(out / "pred.csv")[1:]
    speakers = turns_files(rows, tmp_path)
    for name in ("turns.csv", "turns.rttm"):
        assert predict(setup, recordings, tmp_path / f"{name}.out.csv", "--turns", tmp_path / name) == 0
        got = read_csv(tmp_path / f"{name}.out.csv")
        assert got[0] == ["File_Name", "Start", "End", "Speaker"] + SCORES
        assert [r[:4] for r in got[1:]] == [r[:3] + [s] for r, s in zip(rows, speakers)]
        np.testing.assert_allclose(np.array([r[4:] for r in got[1:]], float),
                                   np.array([r[3:] for r in rows], float), rtol=0, atol=1e-5)
    assert read_csv(tmp_path / "turns.csv.out.csv") == read_csv(tmp_path / "turns.rttm.out.csv")
    assert predict(setup, recordings, tmp_path / "plain.out.csv", "--turns", tmp_path / "plain.csv") == 0
    assert read_csv(tmp_path / "plain.out.csv")[0] == ["File_Name", "Start", "End"] + SCORES


@pytest.mark.parametrize("text, message", [
    ("File_Name,Start,End\nmissing.wav,1,2\n", "turns.csv line 2: no audio file missing.wav under "),
    ("File_Name,Start,End\ntalk.wav,40,90\n", "turns.csv line 2: the turn 40–90 s is outside talk.wav"),
    ("File_Name,Start,End\ntalk.wav,2,x\n", "turns.csv line 2: End must be a number of seconds, got 'x'"),
])
def test_a_bad_turns_file_is_one_line_and_writes_nothing(setup, recordings, tmp_path, capsys, text, message):
    (tmp_path / "turns.csv").write_text(text)
    argv = ["--input", recordings, "--output", tmp_path / "p.csv", *model_flags(setup), "--turns",
            tmp_path / "turns.csv"]
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "p.csv").exists()


def test_turns_flags_are_checked(setup, capsys):
    for extra, message in ((["--turns", "vad", "--window", "2"], "--window and --turns exclude each other"),
                           (["--turns", "vad", "--hop", "2"], "--hop needs --window")):
        with pytest.raises(SystemExit) as done:
            prediction_process.parse_args(extra)
        assert done.value.code == 2 and message in capsys.readouterr().err
    assert prediction_process.parse_args(["--turns", "vad", "--plot", "p"]).plot == "p"


# --- Python and ONNX ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(setup):
    return Predictor(model_dir=setup["models"], norm_dir=setup["norm"], model_type=MT, epochs=EPOCHS,
                     batch_size=BATCH, num_clusters=K)


def as_rows(table):
    return [[str(v) if isinstance(v, float) and c in ("Start", "End") else v for c, v in zip(table.columns, row)]
            for row in table.itertuples(index=False)]


def test_the_predictor_gives_the_commands_table(predictor, recordings, vad_run, tmp_path):
    _, out = vad_run
    rows = [[r[0], r[1], r[2]] + [float(v) for v in r[3:]] for r in read_csv(out / "pred.csv")[1:]]
    with pytest.warns(UserWarning, match="2 of 4 input.*no speech found"):
        table = predictor.predict(str(recordings), turns="vad", skip_errors=True)
    assert list(table.columns) == ["File_Name", "Start", "End"] + SCORES
    assert as_rows(table) == rows                                # exactly: the same blocks and batches
    with pytest.raises(UserError, match="silence.wav: no speech found"):
        predictor.predict(str(recordings / "silence.wav"), turns="vad")
    # An array: the file's samples, predicted as the file's turns are.
    samples, rate = sf.read(str(recordings / "talk44.wav"))
    array = predictor.predict(samples, sample_rate=rate, name="talk44.wav", turns="vad")
    expected = [r for r in rows if r[0] == "talk44.wav"]
    assert [r[:3] for r in as_rows(array)] == [r[:3] for r in expected]
    np.testing.assert_allclose(array[SCORES].to_numpy(), np.array([r[3:] for r in expected]), rtol=0, atol=1e-5)
    # A segments table, with speakers.
    segments = pd.DataFrame({"File_Name": [r[0] for r in rows], "Start": [float(r[1]) for r in rows],
                             "End": [float(r[2]) for r in rows], "Speaker": "S"})
    given = predictor.predict(str(recordings), turns=segments)
    assert list(given.columns) == ["File_Name", "Start", "End", "Speaker"] + SCORES
    assert (given["Speaker"] == "S").all() and len(given) == len(rows)
    np.testing.assert_allclose(given[SCORES].to_numpy(), np.array([r[3:] for r in rows]), rtol=0, atol=1e-5)
    with pytest.raises(UserError, match="window and turns exclude each other"):
        predictor.predict(str(recordings), turns="vad", window=2)


@pytest.fixture(scope="module")
def exported(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert export_onnx.main([*map(str, model_flags(setup)), "--output", str(out)]) == 0
    return out


def test_the_onnx_route_gives_the_commands_turns_and_scores(setup, recordings, vad_run, exported, tmp_path):
    _, out = vad_run
    argv = ["--input", recordings, "--output", tmp_path / "onnx.csv", "--onnx", exported, "--turns", "vad"]
    assert cli(argv) == 1
    torch_rows, onnx_rows = read_csv(out / "pred.csv"), read_csv(tmp_path / "onnx.csv")
    assert [r[:3] for r in onnx_rows] == [r[:3] for r in torch_rows]
    np.testing.assert_allclose(np.array([r[3:] for r in onnx_rows[1:]], float),
                               np.array([r[3:] for r in torch_rows[1:]], float), rtol=0, atol=1e-5)
    with pytest.warns(UserWarning, match="no speech found"):
        table = Predictor(onnx=str(exported)).predict(str(recordings), turns="vad", skip_errors=True)
    assert as_rows(table) == [[r[0], r[1], r[2]] + [float(v) for v in r[3:]] for r in onnx_rows[1:]]


# The docs' example: speaking turns predicted with ONNX Runtime alone (no torch imported).
def test_the_torch_free_example_predicts_the_commands_turns(recordings, exported, tmp_path):
    assert cli(["--input", recordings, "--output", tmp_path / "onnx.csv", "--onnx", exported, "--turns", "vad"]) == 1
    code = deployment_examples()[2].replace('"onnx"', repr(str(exported))).replace('"talk.wav"',
                                                                            repr(str(recordings / "talk44.wav")))
    code += "\nimport sys\nassert 'torch' not in sys.modules, 'the example imported torch'\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line.split() for line in done.stdout.splitlines()]
    expected = [r for r in read_csv(tmp_path / "onnx.csv")[1:] if r[0] == "talk44.wav"]
    assert [p[:2] for p in printed] == [[f"{float(r[1]):.3f}", f"{float(r[2]):.3f}"] for r in expected]
    np.testing.assert_allclose(np.array([p[2:] for p in printed], float), np.array([r[3:] for r in expected], float),
                               rtol=0, atol=1e-5)


# --- a long recording ---------------------------------------------------------------------------------
def test_a_long_recording_is_read_in_blocks(setup, tmp_path, monkeypatch):
    """Three copies of the recording: no read asks for more than a block or a turn, and the
    file is never read whole."""
    y, _ = synthetic_recording()
    audio = tmp_path / "in"
    write_audio(str(audio / "long.wav"), np.concatenate([y, y, y]), subtype="PCM_16")
    reads = []
    real_read = ForwardReader.read

    def spy_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    def whole_file_read(*args, **kwargs):
        raise AssertionError("the whole file was read")

    monkeypatch.setattr(ForwardReader, "read", spy_read)
    monkeypatch.setattr(sf, "read", whole_file_read)
    assert predict(setup, audio, tmp_path / "pred.csv", "--turns", "vad") == 0
    assert 0 < max(reads) <= max(round(turn_audio.BLOCK_SECONDS * SR), LONGEST_TURN_SAMPLES)
    rows = read_csv(tmp_path / "pred.csv")[1:]
    spans = [(round(float(r[1]) * SR), round(float(r[2]) * SR)) for r in rows]
    assert all(0 < end - start <= LONGEST_TURN_SAMPLES for start, end in spans)
    # The first copy's turns are those of the recording alone (the last aside: the copy after
    # it changes the pause that follows it), and the copies hold as many turns as it.
    alone = [(t.start, t.end) for t in turn_audio.detected_turns(vad.SpeechDetector(),
                                                                  turn_audio.array_pieces(y, SR), SR)]
    assert spans[:len(alone) - 1] == alone[:-1]
    assert len(alone) * 3 - 2 <= len(spans) <= len(alone) * 3 + 2
