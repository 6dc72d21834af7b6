"""A long demo recording whose emotion changes over time and whose speaking turns and pauses
are known (images/make_long_recording.py writes it; bench.py times --turns vad on it).

One synthetic speaker (make_demo_corpus.py's speaker, demo/speech.py's voice) talks in turns
of 3-9 s (within MSP-Podcast's 2.75-11 s) separated by pauses of 0.8-2 s of room tone
(longer than the pauses speaking_turns.py joins within a turn); arousal and dominance rise
and fall once over the recording, valence drifts the other way. The same length gives the
same samples.
"""
import csv
import os

import numpy as np

from demo import speakers as demo
from demo import speech
from utils import atomic_path

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



def write(folder, minutes):
    """Write NAME.wav and NAME_truth.csv (File_Name, Start, End, Act, Dom, Val: a turns file for
    --turns too) into `folder`; returns (the WAV's path, seconds, turns)."""
    pcm, truth = build(minutes)
    os.makedirs(folder, exist_ok=True)
    wav = os.path.join(folder, NAME + ".wav")
    demo.write_wav(wav, pcm)
    with atomic_path(os.path.join(folder, NAME + "_truth.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["File_Name", "Start", "End", "Act", "Dom", "Val"])
            w.writerows((NAME + ".wav", s, e, f"{a:.3f}", f"{d:.3f}", f"{v:.3f}") for s, e, a, d, v in truth)
    return wav, len(pcm) / speech.SAMPLE_RATE, len(truth)
