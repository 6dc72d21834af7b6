"""deepemocluster/speaking_turns.py, vad.py and turn_files.py: the turn rules on frame
probabilities whose pauses are known exactly, Silero VAD (through ONNX Runtime) on the demo
synthesiser's speech with known pauses, and the CSV and RTTM turns files."""
import os

import numpy as np
import pytest

from support.audio import SR
from support.speech import TURN_SECONDS, synthetic_recording
from demo import speech
from deepemocluster import speaking_turns as rules
from deepemocluster import turn_audio, turn_files, vad
from utils import UserError

FRAME = vad.FRAME_SAMPLES
SPEECH_P, PAUSE_P = 0.9, 0.02
LOUD_DB, QUIET_DB = -20.0, -60.0


def frames(seconds):
    return round(seconds * SR / FRAME)


def layout(*parts):
    """Frame probabilities and levels of a recording laid out as ("speech" | "pause", seconds)
    parts; and each part's [start, end) in samples."""
    probs, levels, spans, at = [], [], [], 0
    for kind, seconds in parts:
        n = frames(seconds)
        probs += [SPEECH_P if kind == "speech" else PAUSE_P] * n
        levels += [LOUD_DB if kind == "speech" else QUIET_DB] * n
        spans.append((kind, at * FRAME, (at + n) * FRAME))
        at += n
    return np.array(probs, np.float32), np.array(levels, np.float32), spans, at * FRAME


MARGIN = round(rules.TURN_MARGIN_SECONDS * SR)
LONGEST = round(rules.LONGEST_TURN_SECONDS * SR)


# --- the turn rules -----------------------------------------------------------------------------------
def test_short_pauses_are_joined_and_longer_ones_end_a_turn():
    probs, levels, spans, n = layout(("pause", 1.0), ("speech", 3.0), ("pause", 0.3), ("speech", 2.0),
                                     ("pause", 1.0), ("speech", 4.0), ("pause", 2.0))
    speech_spans = [(a, b) for kind, a, b in spans if kind == "speech"]
    assert rules.turn_spans(probs, levels, n) == [
        (speech_spans[0][0] - MARGIN, speech_spans[1][1] + MARGIN),     # across the 0.3 s pause
        (speech_spans[2][0] - MARGIN, speech_spans[2][1] + MARGIN)]


def test_a_margin_stays_within_the_recording_and_its_quiet():
    probs, levels, spans, n = layout(("pause", 0.032), ("speech", 3.0), ("pause", 2.0), ("speech", 3.0))
    (_, a1, b1), _, (_, a2, b2) = spans[1:]
    assert b2 == n and a1 < MARGIN
    assert rules.turn_spans(probs, levels, n) == [(0, b1 + MARGIN), (a2 - MARGIN, n)]
    levels[b1 // FRAME + 2] = LOUD_DB              # sound 64 ms after the speech: the margin stops
    assert rules.turn_spans(probs, levels, n)[0] == (0, b1 + 2 * FRAME)


def test_long_speech_is_split_at_its_longest_pauses_and_no_turn_is_over_11_s():
    parts = [("pause", 1.0)]
    pause_lengths = [0.1, 0.2, 0.15, 0.45, 0.1, 0.2, 0.3, 0.1, 0.25, 0.1]   # all joined (< 0.5 s)
    for pause in pause_lengths:
        parts += [("speech", 2.4), ("pause", pause)]
    parts += [("speech", 2.4), ("pause", 1.0)]
    probs, levels, spans, n = layout(*parts)
    turns = rules.turn_spans(probs, levels, n)
    pauses = [(a, b) for kind, a, b in spans if kind == "pause"]
    assert len(turns) == 3
    assert all(end - start <= LONGEST for start, end in turns)
    assert all(end - start >= round(rules.SHORTEST_TURN_SECONDS * SR) for start, end in turns)
    # Every boundary lies in a pause; the first cut is at the longest pause (0.45 s).
    for start, end in turns:
        assert any(a <= start <= b for a, b in pauses) and any(a <= end <= b for a, b in pauses)
    longest = pauses[1 + pause_lengths.index(0.45)]
    assert longest[0] <= turns[0][1] <= longest[1] or longest[0] <= turns[1][1] <= longest[1]


def test_unbroken_speech_is_cut_at_its_least_speech_like_frame():
    probs, levels, spans, n = layout(("pause", 1.0), ("speech", 16.0), ("pause", 1.0))
    quietest = frames(1.0) + frames(7.0)
    probs[quietest] = 0.4                          # still speech (hysteresis), but the least sure
    turns = rules.turn_spans(probs, levels, n)
    assert len(turns) == 2 and all(end - start <= LONGEST for start, end in turns)
    assert turns[0][1] == quietest * FRAME and turns[1][0] == (quietest + 1) * FRAME


def test_an_hour_of_speech_is_cut_into_turns_that_fit():
    """Unbroken speech, and speech whose every pause is short, an hour of each."""
    hour = frames(3600.0)
    unbroken = rules.turn_spans(np.full(hour, SPEECH_P, np.float32), np.full(hour, LOUD_DB, np.float32),
                                hour * FRAME)
    parts = [("speech", 2.0), ("pause", 0.256)] * 1600
    probs, levels, _, n = layout(*parts)
    talk = rules.turn_spans(probs, levels, n)
    for turns in (unbroken, talk):
        assert all(0 < end - start <= LONGEST for start, end in turns)
        assert all(a[1] <= b[0] for a, b in zip(turns, turns[1:]))
        assert len(turns) >= 3600 / rules.LONGEST_TURN_SECONDS


def test_short_turns_are_joined_where_the_pause_allows_and_kept_alone_otherwise():
    probs, levels, spans, n = layout(("pause", 1.0), ("speech", 1.0), ("pause", 1.2), ("speech", 3.0),
                                     ("pause", 4.0), ("speech", 1.5), ("pause", 4.0))
    speech_spans = [(a, b) for kind, a, b in spans if kind == "speech"]
    assert rules.turn_spans(probs, levels, n) == [
        (speech_spans[0][0] - MARGIN, speech_spans[1][1] + MARGIN),     # 1 s joined across 1.2 s
        (speech_spans[2][0] - MARGIN, speech_spans[2][1] + MARGIN)]     # 1.5 s alone: kept


def test_clicks_are_dropped_and_sound_the_detector_missed_is_grown_into():
    probs, levels, spans, n = layout(("pause", 2.0), ("speech", 0.16), ("pause", 3.0), ("speech", 3.0),
                                     ("pause", 2.0))
    assert rules.turn_spans(probs[:frames(4.0)], levels[:frames(4.0)], frames(4.0) * FRAME) == []
    start = spans[3][1] // FRAME
    levels[start - frames(0.3):start] = LOUD_DB    # 0.3 s of sound before the detected onset
    (turn,) = rules.turn_spans(probs, levels, n)
    assert turn[0] == (start - frames(0.3)) * FRAME - MARGIN
    assert rules.turn_spans(np.full(100, PAUSE_P, np.float32), np.full(100, QUIET_DB, np.float32),
                            100 * FRAME) == []


# --- Silero VAD on synthetic speech with known pauses ---------------------------------------------------
# The demo synthesiser's turns (a voice the detector hears: of 20 such speakers it finds every
# turn of 14 with an overlap of 0.5 or more), then room tone; the third turn is 14 s of speech
# whose word pauses are all under JOINED_PAUSE_SECONDS.
QUIET_DBFS = speech.NOISE_LEVEL_DBFS + vad.QUIET_MARGIN_DB


def level_dbfs(samples):
    return 10 * np.log10(np.mean(np.square(samples, dtype=np.float64)))


def overlap(a, b):
    return max(0, min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.fixture(scope="module")
def detected():
    y, truth = synthetic_recording()
    turns = turn_audio.detected_turns(vad.SpeechDetector(), turn_audio.array_pieces(y, SR), SR)
    return y, truth, [(t.start, t.end) for t in turns]


def test_the_detector_cuts_synthetic_speech_in_its_pauses(detected):
    y, truth, turns = detected
    assert all(end - start <= LONGEST for start, end in turns)
    # Each turn starts and ends in quiet: its first and last 16 ms are as quiet as the pauses.
    for start, end in turns:
        assert level_dbfs(y[start:start + 256]) < QUIET_DBFS and level_dbfs(y[end - 256:end]) < QUIET_DBFS
    # No turn runs through a pause between true turns.
    for (_, end), (start, _) in zip(truth, truth[1:]):
        assert not any(a < end and b > start for a, b in turns)
    # Every true turn of at most 11 s is one detected turn; the 14 s one is split in two.
    for k, span in enumerate(truth):
        parts = [t for t in turns if overlap(span, t) > 0]
        if TURN_SECONDS[k] <= rules.LONGEST_TURN_SECONDS:
            assert len(parts) == 1 and overlap(span, parts[0]) >= 0.8
        else:
            assert len(parts) == 2 and parts[0][1] <= parts[1][0]


def test_the_detector_needs_no_torch_and_reads_in_blocks(detected):
    """The same turns from a file, read in pieces (soundfile's forward reads), in a process
    that never imports torch."""
    import subprocess
    import sys
    import tempfile

    import soundfile as sf

    y, _, turns = detected
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "talk.wav")
        sf.write(path, y, SR, subtype="FLOAT")
        code = ("import sys\n"
                "from deepemocluster.turn_audio import file_turns\n"
                f"print([(round(s * {SR}), round(e * {SR})) for s, e, _, _ in file_turns({path!r})])\n"
                "assert 'torch' not in sys.modules, 'torch was imported'\n")
        done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == turns


def test_silence_room_tone_and_noise_hold_no_speech():
    rng = np.random.default_rng(3)
    detector = vad.SpeechDetector()
    for samples in (np.zeros(5 * SR, np.float32), speech.room_tone(rng, 5 * SR).astype(np.float32),
                    (0.05 * rng.standard_normal(5 * SR)).astype(np.float32)):
        with pytest.raises(turn_audio.NoSpeech):
            turn_audio.detected_turns(detector, turn_audio.array_pieces(samples, SR), SR)


def test_a_recording_resampled_in_blocks_equals_it_resampled_whole():
    import librosa

    y = np.random.default_rng(0).standard_normal(44100 * 7).astype(np.float32)
    pieces = turn_audio.array_pieces(y, 44100, block_seconds=2.0)
    stream = vad.resampler(44100)
    blocks = [stream(piece, last) for piece, last in vad.with_last(pieces)]
    np.testing.assert_array_equal(np.concatenate(blocks), librosa.resample(y, orig_sr=44100, target_sr=SR))


# --- turns files ----------------------------------------------------------------------------------------
def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def audio(tmp_path):
    import soundfile as sf

    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    sf.write(str(folder / "a.wav"), np.zeros(10 * SR, np.float32), SR)
    sf.write(str(folder / "sub" / "b.flac"), np.zeros((3 * 44100, 2), np.float32), 44100)
    return folder, [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]


def test_csv_and_rttm_turns_are_matched_to_their_files(audio, tmp_path):
    folder, paths = audio
    csv_path = write(tmp_path / "t.csv", "File_Name,Start,End,Speaker\nsub/b.flac,0.5,2.25,B\n"
                                        "a.wav,3.0,4.5,A\na.wav,1.0,2.0,B\n")
    plan = turn_files.turn_plan(csv_path, paths, str(folder))
    assert plan.speakers and plan.by_file == {
        paths[0]: [turn_audio.GivenTurn(16000, 32000, "B"), turn_audio.GivenTurn(48000, 72000, "A")],
        paths[1]: [turn_audio.GivenTurn(8000, 36000, "B")]}
    rttm = write(tmp_path / "t.rttm", ";; a comment\nSPEAKER a 1 1.000 1.000 <NA> <NA> B <NA> <NA>\n"
                                     "SPEAKER a 1 3.0 1.5 <NA> <NA> A <NA> <NA>\n"
                                     "SPKR-INFO a 1 <NA> <NA> <NA> unknown A <NA> <NA>\n"
                                     "SPEAKER b 1 0.5 1.75 <NA> <NA> B <NA> <NA>\n")
    assert turn_files.turn_plan(rttm, paths, str(folder)) == plan
    plain = turn_files.turn_plan(write(tmp_path / "p.csv", "Start,End,File_Name\n0,1.0000001,a.wav\n"),
                                 paths, str(folder))
    assert not plain.speakers and plain.by_file == {paths[0]: [turn_audio.GivenTurn(0, 16000, None)]}


@pytest.mark.parametrize("name, text, message", [
    ("t.csv", "File_Name,Start\na.wav,1\n", "t.csv: the header must name File_Name, Start, End"),
    ("t.csv", "File_Name,Start,End\na.wav,one,2\n", "t.csv line 2: Start must be a number of seconds, got 'one'"),
    ("t.csv", "File_Name,Start,End\na.wav,1,2\na.wav,3,2\n", "t.csv line 3: End 2 must be after Start 3"),
    ("t.csv", "File_Name,Start,End\na.wav,-1,2\n", "t.csv line 2: Start -1 is before the start of the file"),
    ("t.csv", "File_Name,Start,End\na.wav,1\n", "t.csv line 2: 2 value(s), the header has 3"),
    ("t.csv", "File_Name,Start,End\na.wav,9,10.5\n", "t.csv line 2: the turn 9–10.5 s is outside a.wav (10.000 s long)"),
    ("t.csv", "File_Name,Start,End\nc.wav,1,2\n", "t.csv line 2: no audio file c.wav under "),
    ("t.csv", "File_Name,Start,End\n", "t.csv: no turns in it"),
    ("t.rttm", "SPEAKER b 1 2.5 1.0 <NA> <NA> B\n", "t.rttm line 1: the turn 2.5–3.5 s is outside b"),
    ("t.rttm", "SPEAKER a 1 1.0\n", "t.rttm line 1: an RTTM SPEAKER line needs at least 8 fields"),
    ("t.rttm", "SPEAKER a 1 1.0 x <NA> <NA> A <NA> <NA>\n", "t.rttm line 1: duration must be a number"),
])
def test_bad_turns_files_are_one_clear_line(audio, tmp_path, name, text, message):
    folder, paths = audio
    with pytest.raises(UserError) as raised:
        turn_files.turn_plan(write(tmp_path / name, text), paths, str(folder))
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(UserError, match="no such file"):
        turn_files.turn_plan(str(tmp_path / "none.csv"), paths, str(folder))


def test_without_the_silero_vad_package_the_detector_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"^--turns vad needs the silero-vad package \(requirements.txt\): "
                                        r"`.venv/bin/pip install silero-vad`$"):
        vad.SpeechDetector()
