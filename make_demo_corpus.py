"""Write a synthetic emotional-speech corpus in the MSP-Podcast layout.

The corpus lets the rest of the project (feature extraction, training, test,
prediction) run end to end without the real MSP-Podcast data. Every turn is
speech-like sound made from a glottal pulse train through formant resonators
(demo/speech.py), and its emotional attributes (arousal, valence, dominance)
drive acoustic cues the way they do in real emotional speech, so the attributes
can be learnt from mel spectrograms. Labels are means of simulated raters' 1-7
ratings.

Layout written under --out (the default, --release v1.8):

    Audios/MSP-PODCAST_{speaker:04d}_{turn:04d}.wav   labelled turns
    Labels/labels_concensus.csv                        their labels (Train, Validation, Test1)
    Predict/PREDICT_{speaker:04d}_{turn:04d}.wav       unlabelled, Test1 speakers
    Unlabeled/UNLABELED_{speaker:04d}_{turn:04d}.wav   unlabelled, new speakers
    demo_corpus.json                                   marks the folder as ours

With --release v1.12 (the layout of the releases distributed today, method §2)
the labels file is Labels/labels_consensus.csv and its splits are Train,
Development, Test1, Test2 and Test3; Test3 turns have audio in Audios/ and a
row with empty EmoClass/EmoAct/EmoVal/EmoDom cells and SpkrID `Unknown`.

The same seed and flags give byte-identical files: each speaker and each turn
has its own random generator derived from (seed, stream, speaker, turn).
"""

import argparse
import json
import math
import os
import re
import time

import numpy as np

from deepemocluster.corpus import DEMO_CORPUS
from demo.speakers import INT16_FULL_SCALE, draw_emotion, emotion_class, make_speaker, rate_emotion, write_wav
from demo.speech import SAMPLE_RATE, synthesize_turn
from utils import atomic_path, run_cli

# --- Audio format ---------------------------------------------------------
MIN_TURN_SECONDS = 2.75
MAX_TURN_SECONDS = 7.0

# --- Corpus size ----------------------------------------------------------
DEFAULT_TRAIN_TURNS = 480
DEFAULT_VALIDATION_TURNS = 120
DEFAULT_TEST_TURNS = 120
DEFAULT_TEST2_TURNS = 60               # v1.12 only; about Test2/Train of the real v1.12
DEFAULT_TEST3_TURNS = 20               # v1.12 only; one speaker's worth
DEFAULT_PREDICT_TURNS = 20
DEFAULT_UNLABELED_TURNS = 0
TURNS_PER_SPEAKER = 20                 # 480/120/120 turns -> 24/6/6 speakers

# --- Layout ---------------------------------------------------------------
SPLITS = ("Train", "Validation", "Test1")
CSV_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom",
               "SpkrID", "Gender", "Split_Set")   # also the v1.12 column order
AUDIO_DIR = "Audios"                   # the real v1.8 named it Audio/; the demo always used Audios/
LABEL_DIR = "Labels"
LABEL_FILE = "labels_concensus.csv"    # the corpus's own spelling
# Releases (method §2): labels file name, splits in the order speakers are numbered,
# and the split that --validation counts.
DEFAULT_RELEASE = "v1.8"
RELEASES = {
    "v1.8": {"label_file": LABEL_FILE, "splits": SPLITS, "validation": "Validation"},
    "v1.12": {"label_file": "labels_consensus.csv",
              "splits": ("Train", "Development", "Test1", "Test2", "Test3"),
              "validation": "Development"},
}
UNLABELLED_SPLITS = ("Test3",)         # audio released, labels withheld
UNKNOWN_SPEAKER = "Unknown"            # SpkrID of a turn whose speaker the corpus does not give
PREDICT_DIR = "Predict"
UNLABELED_DIR = "Unlabeled"
MARKER_FILE = "demo_corpus.json"
LABELLED_NAME = "MSP-PODCAST_{speaker:04d}_{turn:04d}.wav"
PREDICT_NAME = "PREDICT_{speaker:04d}_{turn:04d}.wav"
UNLABELED_NAME = "UNLABELED_{speaker:04d}_{turn:04d}.wav"
# Files of ours that a rerun may delete when they are not part of the new corpus.
OWN_FILE_PATTERNS = {
    AUDIO_DIR: re.compile(r"MSP-PODCAST_\d{4}_\d{4}\.wav"),
    PREDICT_DIR: re.compile(r"PREDICT_\d{4}_\d{4}\.wav"),
    UNLABELED_DIR: re.compile(r"UNLABELED_\d{4}_\d{4}\.wav"),
    LABEL_DIR: re.compile("|".join(re.escape(r["label_file"]) for r in RELEASES.values())),
}

# Random streams: keep speakers (demo.speakers.SPEAKER_STREAM = 0), labelled, predict and unlabelled draws apart.
LABELLED_STREAM = 1
PREDICT_STREAM = 2
UNLABELED_STREAM = 3

def make_turn(seed, stream, speaker, turn):
    """Audio (int16) and labels of one turn, a pure function of (seed, stream, speaker, turn)."""
    rng = np.random.default_rng([seed, stream, speaker["id"], turn])
    latent = draw_emotion(rng, speaker)
    labels = rate_emotion(rng, latent)
    duration_s = rng.uniform(MIN_TURN_SECONDS, MAX_TURN_SECONDS)
    audio = synthesize_turn(rng, speaker, latent, duration_s)
    pcm = np.rint(audio * INT16_FULL_SCALE).astype("<i2")
    return pcm, labels


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def format_rating(value):
    return f"{value:.4f}"


def labels_csv_text(rows):
    lines = [",".join(CSV_COLUMNS)]
    for row in rows:
        lines.append(",".join(str(row[column]) for column in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def check_output_dir(out_dir):
    """Refuse to write into a folder that holds a corpus this script did not make."""
    if os.path.exists(os.path.join(out_dir, MARKER_FILE)):
        return None
    for release in RELEASES.values():
        if os.path.exists(os.path.join(out_dir, LABEL_DIR, release["label_file"])):
            return (f"{out_dir} already holds {LABEL_DIR}/{release['label_file']} but no "
                    f"{MARKER_FILE}: it does not look like a demo corpus written by this script; "
                    "choose another --out")
    return None


def prune_stale_files(out_dir, keep):
    """Delete our own generated files (by name pattern) that the new corpus does not have:
    WAVs of a bigger earlier run, the labels file of another --release."""
    removed = 0
    for sub, pattern in OWN_FILE_PATTERNS.items():
        folder = os.path.join(out_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if pattern.fullmatch(name) and path not in keep:
                os.remove(path)
                removed += 1
    return removed


# ---------------------------------------------------------------------------
# Corpus plan
# ---------------------------------------------------------------------------

def speaker_count(n_turns):
    """Speakers for a split of n_turns: about TURNS_PER_SPEAKER each, at least one."""
    if n_turns <= 0:
        return 0
    return max(1, math.ceil(n_turns / TURNS_PER_SPEAKER))


def spread(n_items, n_groups):
    """Split n_items as evenly as possible into n_groups sizes."""
    base, extra = divmod(n_items, n_groups)
    return [base + (1 if i < extra else 0) for i in range(n_groups)]


def plan_corpus(counts, n_predict, n_unlabeled):
    """List of (stream, speaker_id, turn, kind, split) for every file to write.

    Speakers of the splits in `counts` are numbered 1.. in its order (Train,
    Validation, Test1; or Train, Development, Test1, Test2, Test3), so splits
    never share a speaker and the first three splits are the same in both
    releases; unlabelled-pool speakers come after them. Predict turns cycle
    over the Test1 speakers with their own numbering.
    """
    plan = []
    next_speaker = 1
    test_speakers = []
    for split in counts:
        n_turns = counts[split]
        n_spk = speaker_count(n_turns)
        for speaker_id, n in zip(range(next_speaker, next_speaker + n_spk), spread(n_turns, max(n_spk, 1))):
            for turn in range(1, n + 1):
                plan.append((LABELLED_STREAM, speaker_id, turn, "labelled", split))
            if split == "Test1":
                test_speakers.append(speaker_id)
        next_speaker += n_spk
    for k in range(n_predict):
        speaker_id = test_speakers[k % len(test_speakers)]
        plan.append((PREDICT_STREAM, speaker_id, k // len(test_speakers) + 1, "predict", None))
    n_spk = speaker_count(n_unlabeled)
    for speaker_id, n in zip(range(next_speaker, next_speaker + n_spk), spread(n_unlabeled, max(n_spk, 1))):
        for turn in range(1, n + 1):
            plan.append((UNLABELED_STREAM, speaker_id, turn, "unlabeled", None))
    return plan


def file_path(out_dir, kind, speaker_id, turn):
    if kind == "labelled":
        return os.path.join(out_dir, AUDIO_DIR, LABELLED_NAME.format(speaker=speaker_id, turn=turn))
    if kind == "predict":
        return os.path.join(out_dir, PREDICT_DIR, PREDICT_NAME.format(speaker=speaker_id, turn=turn))
    return os.path.join(out_dir, UNLABELED_DIR, UNLABELED_NAME.format(speaker=speaker_id, turn=turn))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        description="Write a synthetic emotional-speech corpus in the MSP-Podcast layout "
                    "(Audios/, Labels/labels_concensus.csv, Predict/, Unlabeled/; with "
                    "--release v1.12 Labels/labels_consensus.csv with Train, Development, "
                    "Test1, Test2 and an unlabelled Test3).")
    parser.add_argument("--out", default=DEMO_CORPUS,
                        help="corpus folder to write (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed; the same seed and flags give identical files (default: 0)")
    parser.add_argument("--release", choices=list(RELEASES), default=DEFAULT_RELEASE,
                        help="corpus layout: v1.8 (labels_concensus.csv; Train, Validation, Test1) "
                             "or v1.12 (labels_consensus.csv; Train, Development, Test1, Test2, "
                             "and Test3 with audio but no labels) (default: %(default)s)")
    parser.add_argument("--size", type=positive_float, default=1.0,
                        help="scale on the default Train/Validation/Test1 counts "
                             f"({DEFAULT_TRAIN_TURNS}/{DEFAULT_VALIDATION_TURNS}/{DEFAULT_TEST_TURNS}; "
                             f"with v1.12 Train/Development/Test1/Test2/Test3: {DEFAULT_TRAIN_TURNS}/"
                             f"{DEFAULT_VALIDATION_TURNS}/{DEFAULT_TEST_TURNS}/{DEFAULT_TEST2_TURNS}/"
                             f"{DEFAULT_TEST3_TURNS}); each split keeps at least one turn (default: 1.0)")
    parser.add_argument("--train", type=non_negative_int, default=None,
                        help="number of Train turns (overrides --size)")
    parser.add_argument("--validation", type=non_negative_int, default=None,
                        help="number of Validation turns, Development with --release v1.12 "
                             "(overrides --size)")
    parser.add_argument("--test", type=non_negative_int, default=None,
                        help="number of Test1 turns (overrides --size)")
    parser.add_argument("--test2", type=non_negative_int, default=None,
                        help=f"number of Test2 turns, --release v1.12 only (overrides --size; "
                             f"default {DEFAULT_TEST2_TURNS})")
    parser.add_argument("--test3", type=non_negative_int, default=None,
                        help=f"number of unlabelled Test3 turns, --release v1.12 only (overrides "
                             f"--size; default {DEFAULT_TEST3_TURNS})")
    parser.add_argument("--predict", type=non_negative_int, default=DEFAULT_PREDICT_TURNS,
                        help="unlabelled turns from Test1 speakers written to Predict/ (default: %(default)s)")
    parser.add_argument("--unlabeled", type=non_negative_int, default=DEFAULT_UNLABELED_TURNS,
                        help="unlabelled turns from new speakers written to Unlabeled/ (default: %(default)s)")
    return parser


def split_counts(args):
    """Turn counts per split of the release, in its order: explicit flags win, otherwise
    the defaults scaled by --size."""
    validation = RELEASES[args.release]["validation"]
    defaults = {"Train": DEFAULT_TRAIN_TURNS, validation: DEFAULT_VALIDATION_TURNS,
                "Test1": DEFAULT_TEST_TURNS, "Test2": DEFAULT_TEST2_TURNS,
                "Test3": DEFAULT_TEST3_TURNS}
    given = {"Train": args.train, validation: args.validation, "Test1": args.test,
             "Test2": args.test2, "Test3": args.test3}
    return {split: given[split] if given[split] is not None
            else max(1, int(round(defaults[split] * args.size)))
            for split in RELEASES[args.release]["splits"]}


def label_row(file_name, split, speaker, labels):
    """One row of the labels file; a Test3 row has empty label cells and SpkrID Unknown,
    as the corpus withholds them."""
    if split in UNLABELLED_SPLITS:
        return {"FileName": file_name, "EmoClass": "", "EmoAct": "", "EmoVal": "", "EmoDom": "",
                "SpkrID": UNKNOWN_SPEAKER, "Gender": speaker["gender"], "Split_Set": split}
    act, val, dom = labels
    return {
        "FileName": file_name,
        "EmoClass": emotion_class(act, val, dom),
        "EmoAct": format_rating(act),
        "EmoVal": format_rating(val),
        "EmoDom": format_rating(dom),
        "SpkrID": speaker["id"],
        "Gender": speaker["gender"],
        "Split_Set": split,
    }


def main(argv=None):
    """Write the corpus described by the command line; return 0 on success."""
    parser = build_parser()
    args = parser.parse_args(argv)
    splits = RELEASES[args.release]["splits"]
    for flag, split in (("--test2", "Test2"), ("--test3", "Test3")):
        if getattr(args, flag[2:]) is not None and split not in splits:
            parser.error(f"{flag} needs --release v1.12: the {args.release} layout has no {split}")
    counts = split_counts(args)
    if args.predict > 0 and counts["Test1"] == 0:
        parser.error("--predict draws from Test1 speakers, so it needs --test of at least 1")
    problem = check_output_dir(args.out)
    if problem:
        parser.error(problem)

    started = time.perf_counter()
    out_dir = args.out
    for sub in (AUDIO_DIR, LABEL_DIR, PREDICT_DIR, UNLABELED_DIR):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    plan = plan_corpus(counts, args.predict, args.unlabeled)
    speakers = {}
    rows = []
    written = set()
    for stream, speaker_id, turn, kind, split in plan:
        if speaker_id not in speakers:
            speakers[speaker_id] = make_speaker(args.seed, speaker_id)
        speaker = speakers[speaker_id]
        pcm, labels = make_turn(args.seed, stream, speaker, turn)
        path = file_path(out_dir, kind, speaker_id, turn)
        write_wav(path, pcm)
        written.add(path)
        if kind == "labelled":
            rows.append(label_row(os.path.basename(path), split, speaker, labels))

    # The marker before the labels: a run stopped between them (a full disk) leaves a folder
    # the next run recognises as its own.
    marker = {"generator": "make_demo_corpus.py", "seed": args.seed, "counts": counts,
              "predict": args.predict, "unlabeled": args.unlabeled, "sample_rate": SAMPLE_RATE}
    if args.release != DEFAULT_RELEASE:   # the default's marker stays as it always was
        marker["release"] = args.release
    write_text(os.path.join(out_dir, MARKER_FILE), json.dumps(marker, indent=2, sort_keys=True) + "\n")
    label_path = os.path.join(out_dir, LABEL_DIR, RELEASES[args.release]["label_file"])
    write_text(label_path, labels_csv_text(rows))
    written.add(label_path)
    removed = prune_stale_files(out_dir, written)
    elapsed = time.perf_counter() - started

    n_speakers = {split: len({spk for _, spk, _, kind, s in plan if kind == "labelled" and s == split})
                  for split in counts}
    print(f"Demo corpus written to {os.path.abspath(out_dir)} (seed {args.seed}, "
          f"release {args.release} layout)")
    for split in counts:
        note = "  (no labels, SpkrID Unknown)" if split in UNLABELLED_SPLITS else ""
        print(f"  {split:<11} {counts[split]:5d} turns, {n_speakers[split]:3d} speakers{note}")
    print(f"  {'Predict':<11} {args.predict:5d} turns  -> {os.path.join(out_dir, PREDICT_DIR)}")
    print(f"  {'Unlabeled':<11} {args.unlabeled:5d} turns  -> {os.path.join(out_dir, UNLABELED_DIR)}")
    print(f"  audio  -> {os.path.join(out_dir, AUDIO_DIR)}")
    print(f"  labels -> {label_path}")
    if removed:
        print(f"  removed {removed} stale generated file(s) from an earlier run")
    print(f"  took {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
