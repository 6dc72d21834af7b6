"""A labelled corpus made on the fly, in the MSP-Podcast layout (Audios/, Labels/), and labels
files written from rows."""
import csv
import os

import numpy as np
import soundfile as sf

from support.audio import SR, tone_turn

def write_corpus(root, counts=(("Train", 16), ("Validation", 6), ("Test1", 6)), seed=0):
    rng = np.random.default_rng(seed)
    audio = os.path.join(root, "Audios")
    os.makedirs(audio)
    os.makedirs(os.path.join(root, "Labels"))
    rows, k = [], 0
    for split, n in counts:
        for _ in range(n):
            level = float(rng.uniform(1, 7))
            name = f"MSP-PODCAST_{k // 4:04d}_{k:04d}.wav"
            sf.write(os.path.join(audio, name), tone_turn(rng, level, rng.uniform(2.75, 4.0)), SR,
                     subtype="PCM_16")
            rows.append([name, "N", round(level, 2), round(8 - level, 2), round(level, 2),
                         k // 4, "Female", split])
            k += 1
    with open(os.path.join(root, "Labels", "labels_concensus.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        w.writerows(rows)
    return root


def write_labels(path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path
