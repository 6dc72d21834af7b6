"""--turns FILE: speaking turns given by the user, from a CSV (File_Name, Start, End[, Speaker])
or an RTTM file as speaker diarisers (pyannote and others) write it, matched to the audio
files and checked against them. Any problem (a malformed row, a file not found, a turn
outside its file) is a UserError of one line naming the row.

A turn's Start and End become 16 kHz samples, round(Start·16000) to round(End·16000)
(turn_audio.py reads the same stretch at the file's rate). No torch is imported here.
"""
import csv
import math
import os
from typing import NamedTuple

import soundfile as sf

from deepemocluster.turn_audio import VAD_TURNS, GivenTurn
from utils import SAMPLE_RATE, UserError

CSV_COLUMNS = ("File_Name", "Start", "End")
SPEAKER_COLUMN = "Speaker"
RTTM_EXTENSION = ".rttm"
RTTM_TURN = "SPEAKER"         # the RTTM type of a speaker's turn; other types are not turns
RTTM_FIELDS = 8               # SPEAKER file channel onset duration <NA> <NA> speaker (<NA> <NA>)


class Row(NamedTuple):
    """One turn as the file gives it, with where it is (for messages)."""
    where: str                # "turns.csv line 4"
    name: str                 # the file it names
    start: float
    end: float
    speaker: str = None


class GivenTurns(NamedTuple):
    """The turns of a --turns FILE: {audio path or name: [GivenTurn ordered by start]}, and
    whether they name speakers (the output then has a Speaker column)."""
    by_file: dict
    speakers: bool


def read_rows(path):
    """The rows of a turns file (RTTM by its extension, else CSV), and whether they name speakers."""
    if not os.path.isfile(path):
        raise UserError(f"--turns {path}: no such file (give `vad`, a CSV of File_Name, Start, End"
                        f"[, Speaker], or an RTTM file)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if path.lower().endswith(RTTM_EXTENSION):
                rows, speakers = rttm_rows(f, os.path.basename(path)), True
            else:
                rows, speakers = csv_rows(f, os.path.basename(path))
    except UnicodeDecodeError:
        raise UserError(f"--turns {path}: not a text file (give a CSV or an RTTM file)") from None
    if not rows:
        raise UserError(f"--turns {path}: no turns in it")
    return rows, speakers


def csv_rows(f, label):
    """Rows of a CSV whose header names File_Name, Start, End and, optionally, Speaker."""
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{label}: the header must name {', '.join(CSV_COLUMNS)} (and optionally "
                        f"{SPEAKER_COLUMN}); it has no {', '.join(missing)}")
    index = {c: header.index(c) for c in CSV_COLUMNS + ((SPEAKER_COLUMN,) if SPEAKER_COLUMN in header else ())}
    rows = []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        where = f"{label} line {line}"
        if len(values) < len(header):
            raise UserError(f"{where}: {len(values)} value(s), the header has {len(header)}")
        name = values[index["File_Name"]].strip()
        start, end = (number(values[index[c]], c, where) for c in ("Start", "End"))
        speaker = values[index[SPEAKER_COLUMN]].strip() if SPEAKER_COLUMN in index else None
        rows.append(checked(Row(where, name, start, end, speaker)))
    return rows, SPEAKER_COLUMN in index


def rttm_rows(f, label):
    """Rows of the SPEAKER lines of an RTTM file (onset and duration in seconds)."""
    rows = []
    for line, text in enumerate(f, start=1):
        fields = text.split()
        if not fields or fields[0].startswith(";;") or fields[0] != RTTM_TURN:
            continue
        where = f"{label} line {line}"
        if len(fields) < RTTM_FIELDS:
            raise UserError(f"{where}: an RTTM SPEAKER line needs at least {RTTM_FIELDS} fields "
                            f"(SPEAKER file channel onset duration <NA> <NA> speaker <NA> <NA>), got {len(fields)}")
        onset, duration = number(fields[3], "onset", where), number(fields[4], "duration", where)
        rows.append(checked(Row(where, fields[1], onset, onset + duration, fields[7])))
    return rows


def number(text, what, where):
    """A finite number of seconds, or a UserError naming the row."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} must be a number of seconds, got {text.strip()!r}")
    return value


def checked(row):
    """A row whose name is given, whose Start is at least 0 and whose End is a sample later."""
    if not row.name:
        raise UserError(f"{row.where}: no file named")
    if row.start < 0:
        raise UserError(f"{row.where}: Start {row.start:g} is before the start of the file")
    if round(row.end * SAMPLE_RATE) <= round(row.start * SAMPLE_RATE):
        raise UserError(f"{row.where}: End {row.end:g} must be after Start {row.start:g} "
                        f"(by at least one sample at {SAMPLE_RATE} Hz)")
    return row


def audio_index(paths, root=None):
    """{name: [paths]} under each name a turns file may use for an audio file: its path (as
    given, or relative to `root`), its base name, and its base name without the extension (RTTM's)."""
    index = {}
    for path in paths:
        base = os.path.basename(path)
        names = {path.replace(os.sep, "/"), base, os.path.splitext(base)[0]}
        if root is not None:
            names.add(os.path.relpath(path, root).replace(os.sep, "/"))
        for name in names:
            index.setdefault(name, []).append(path)
    return index


def find_audio(row, index, root):
    """The one audio file a row names."""
    found = index.get(row.name.replace(os.sep, "/"), [])
    if not found:
        among = f"under {root}" if root is not None else f"among the inputs ({', '.join(sorted(index)[:3])})"
        raise UserError(f"{row.where}: no audio file {row.name} {among}")
    if len(set(found)) > 1:
        raise UserError(f"{row.where}: {row.name} is ambiguous ({', '.join(sorted(set(found))[:3])}): "
                        f"name it by its path under {root}")
    return found[0]


def table_rows(table):
    """The rows of a segments table (a pandas DataFrame, or anything pandas makes one of) with
    the CSV's columns, and whether it names speakers."""
    import pandas as pd

    table = pd.DataFrame(table)
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"the turns table must have the columns {', '.join(CSV_COLUMNS)} (and "
                        f"optionally {SPEAKER_COLUMN}); it has no {', '.join(missing)}")
    speakers = SPEAKER_COLUMN in table.columns
    rows = []
    for i, record in enumerate(table.to_dict("records")):
        where = f"turns table row {i}"
        rows.append(checked(Row(where, str(record["File_Name"]).strip(),
                                number(str(record["Start"]), "Start", where),
                                number(str(record["End"]), "End", where),
                                str(record[SPEAKER_COLUMN]) if speakers else None)))
    return rows, speakers


def given_turns(rows, speakers, audio_paths, root=None, durations=None):
    """GivenTurns of `rows`, matched to `audio_paths` (found under `root`; the Predictor's
    arrays by their name), each turn checked to lie within its file. `durations` ({path: 16 kHz
    samples}) is read from the files' headers where not given."""
    if not rows:
        raise UserError("no turns given")
    index = audio_index(audio_paths, root)
    durations = dict(durations or {})
    by_file = {}
    for row in rows:
        audio = find_audio(row, index, root)
        if audio not in durations:
            durations[audio] = header_samples(audio, row)
        start, end = round(row.start * SAMPLE_RATE), round(row.end * SAMPLE_RATE)
        if end > durations[audio]:
            raise UserError(f"{row.where}: the turn {row.start:g}–{row.end:g} s is outside "
                            f"{row.name} ({durations[audio] / SAMPLE_RATE:.3f} s long)")
        by_file.setdefault(audio, []).append(GivenTurn(start, end, row.speaker))
    for turns in by_file.values():
        turns.sort(key=lambda t: (t.start, t.end))
    return GivenTurns(by_file, speakers)


def header_samples(path, row):
    """The length of an audio file in 16 kHz samples, from its header."""
    try:
        info = sf.info(path)
    except Exception as err:   # soundfile raises its own error types for unreadable files
        raise UserError(f"{row.where}: {row.name} is not readable audio "
                        f"({type(err).__name__}: {str(err).strip() or 'no detail'})") from None
    return round(info.frames * SAMPLE_RATE / info.samplerate)


def turn_plan(turns, audio_paths, root=None, durations=None):
    """What --turns (or the Predictor's turns=) asks for: None, VAD_TURNS ("vad"), or the
    GivenTurns of a CSV or RTTM file (a path) or of a segments table, matched to `audio_paths`."""
    if turns is None:
        return None
    if isinstance(turns, str) and turns == VAD_TURNS:
        return VAD_TURNS
    if isinstance(turns, (str, os.PathLike)):
        rows, speakers = read_rows(os.fspath(turns))
    else:
        rows, speakers = table_rows(turns)
    return given_turns(rows, speakers, audio_paths, root, durations)
