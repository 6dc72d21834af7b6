"""Build a long demo recording whose emotion changes over time and whose speaking turns and
pauses are known, for the docs' "Long recordings" plots (fixed windows, and --turns vad).

    python images/make_long_recording.py [--out demo_corpus/Long] [--minutes 2]

One synthetic speaker (make_demo_corpus.py's speaker, demo/speech.py's voice) talks for
--minutes in turns of 3-9 s (within MSP-Podcast's 2.75-11 s) separated by pauses of
0.8-2 s of room tone (longer than the pauses speaking_turns.py joins within a turn);
arousal and dominance rise and fall once over the recording, valence drifts the other way.
Writes `long_recording.wav` and `long_recording_truth.csv` (each turn's File_Name, Start and
End in seconds, exact to the sample, and the three attributes on the 1-7 scale the corpus's
raters use: a turns file for `prediction_process.py --turns` too) into --out. The same
arguments give the same bytes. images/score_turns.py compares predicted turns with it.
"""
import argparse
import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from demo import speakers as demo  # noqa: E402
from demo import speech  # noqa: E402
from utils import atomic_path, run_cli  # noqa: E402

SPEAKER_ID = 900            # beyond the demo corpus's speakers
SEED = 11
TURN_SECONDS = (3.0, 9.0)
PAUSE_SECONDS = (0.8, 2.0)
TRAJECTORY_SD = 1.6         # peak of the latent trajectory, in latent SD units
NAME = "long_recording"


def latent_at(fraction):
    """(arousal, valence, dominance) in latent SD units at a point of the recording (0-1)."""
    rise = TRAJECTORY_SD * np.sin(np.pi * fraction) - TRAJECTORY_SD / 2
    return np.array([rise, -0.6 * rise, 0.8 * rise])


def build(minutes):
    """The recording (int16 PCM) and its turns: (start s, end s, act, dom, val on 1-7), the
    turn being the samples round(start·16000) to round(end·16000)."""
    rng = np.random.default_rng(SEED)
    speaker = demo.make_speaker(SEED, SPEAKER_ID)
    total = round(minutes * 60.0 * speech.SAMPLE_RATE)
    pieces, truth, at = [], [], 0
    while True:
        n = round(rng.uniform(*TURN_SECONDS) * speech.SAMPLE_RATE)
        if at + n > total:
            break
        latent = latent_at((at + n / 2) / total)
        audio = speech.synthesize_turn(rng, speaker, latent, n / speech.SAMPLE_RATE)[:n]
        act, val, dom = demo.ATTRIBUTE_CENTRE + demo.ATTRIBUTE_SPREAD * latent
        truth.append((at / speech.SAMPLE_RATE, (at + n) / speech.SAMPLE_RATE, act, dom, val))
        pause = speech.room_tone(rng, min(round(rng.uniform(*PAUSE_SECONDS) * speech.SAMPLE_RATE), total - at - n))
        pieces += [audio, pause]
        at += n + len(pause)
    pcm = np.rint(np.concatenate(pieces) * demo.INT16_FULL_SCALE).astype("<i2")
    return pcm, truth


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="./demo_corpus/Long", help="folder for the WAV and its truth CSV")
    p.add_argument("--minutes", type=float, default=2.0, help="length of the recording (default 2)")
    args = p.parse_args(argv)
    if not 0.1 <= args.minutes <= 120:
        p.error("--minutes must be between 0.1 and 120")
    pcm, truth = build(args.minutes)
    os.makedirs(args.out, exist_ok=True)
    wav = os.path.join(args.out, NAME + ".wav")
    demo.write_wav(wav, pcm)
    with atomic_path(os.path.join(args.out, NAME + "_truth.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["File_Name", "Start", "End", "Act", "Dom", "Val"])
            w.writerows((NAME + ".wav", s, e, f"{a:.3f}", f"{d:.3f}", f"{v:.3f}") for s, e, a, d, v in truth)
    print(f"{len(pcm) / speech.SAMPLE_RATE:.1f} s, {len(truth)} turns: {wav}")


if __name__ == "__main__":
    run_cli(main)
