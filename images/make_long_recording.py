"""Build the long demo recording (demo/long_recording.py) whose emotion changes over time and
whose speaking turns and pauses are known, for the docs' "Long recordings" plots (fixed
windows, and --turns vad).

    python images/make_long_recording.py [--out demo_corpus/Long] [--minutes 2]

Writes `long_recording.wav` and `long_recording_truth.csv` (each turn's File_Name, Start and
End in seconds, exact to the sample, and the three attributes on the 1-7 scale the corpus's
raters use: a turns file for `prediction_process.py --turns` too) into --out. The same
arguments give the same bytes. images/score_turns.py compares predicted turns with it.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from demo import long_recording  # noqa: E402
from utils import run_cli  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="./demo_corpus/Long", help="folder for the WAV and its truth CSV")
    p.add_argument("--minutes", type=float, default=2.0, help="length of the recording (default 2)")
    args = p.parse_args(argv)
    if not 0.1 <= args.minutes <= 120:
        p.error("--minutes must be between 0.1 and 120")
    wav, seconds, turns = long_recording.write(args.out, args.minutes)
    print(f"{seconds:.1f} s, {turns} turns: {wav}")

if __name__ == "__main__":
    run_cli(main)
