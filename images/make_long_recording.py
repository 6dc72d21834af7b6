"""Build a long demo recording whose emotion changes over time, for the README's
"Long recordings" plot.

    python images/make_long_recording.py [--out demo_corpus/Long] [--minutes 2]

One synthetic speaker (make_demo_corpus.py's speaker, demo/speech.py's voice) talks for
--minutes in turns of 4-6 s separated by short pauses; arousal and dominance rise and fall
once over the recording, valence drifts the other way. Writes `long_recording.wav` and
`long_recording_truth.csv` (each turn's start, end and the three attributes on the 1-7
scale the corpus's raters use) into --out. The same arguments give the same bytes.
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
TURN_SECONDS = (4.0, 6.0)
PAUSE_SECONDS = (0.3, 0.8)
TRAJECTORY_SD = 1.6         # peak of the latent trajectory, in latent SD units
NAME = "long_recording"


def latent_at(fraction):
    """(arousal, valence, dominance) in latent SD units at a point of the recording (0-1)."""
    rise = TRAJECTORY_SD * np.sin(np.pi * fraction) - TRAJECTORY_SD / 2
    return np.array([rise, -0.6 * rise, 0.8 * rise])


def build(minutes):
    """The recording (int16 PCM) and its turns: (start s, end s, act, dom, val on 1-7)."""
    rng = np.random.default_rng(SEED)
    speaker = demo.make_speaker(SEED, SPEAKER_ID)
    total = minutes * 60.0
    pieces, truth, t = [], [], 0.0
    while t < total:
        seconds = min(rng.uniform(*TURN_SECONDS), total - t)
        if seconds < 1.0:
            break
        latent = latent_at((t + seconds / 2) / total)
        audio = speech.synthesize_turn(rng, speaker, latent, seconds)[:int(seconds * speech.SAMPLE_RATE)]
        act, val, dom = demo.ATTRIBUTE_CENTRE + demo.ATTRIBUTE_SPREAD * latent
        truth.append((round(t, 3), round(t + seconds, 3), act, dom, val))
        pause = np.zeros(int(rng.uniform(*PAUSE_SECONDS) * speech.SAMPLE_RATE))
        pieces += [audio, pause]
        t += seconds + len(pause) / speech.SAMPLE_RATE
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
            w.writerow(["Start", "End", "Act", "Dom", "Val"])
            w.writerows((s, e, f"{a:.3f}", f"{d:.3f}", f"{v:.3f}") for s, e, a, d, v in truth)
    print(f"{len(pcm) / speech.SAMPLE_RATE:.1f} s, {len(truth)} turns: {wav}")


if __name__ == "__main__":
    run_cli(main)
