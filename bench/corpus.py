"""The bench's corpora: the demo corpus make_demo_corpus.py generates, and the scale corpus of
feature files without audio (copies of the demo corpus's, or synthetic mel spectrograms)."""
import contextlib
import csv
import io
import os
import shutil

import numpy as np

import make_demo_corpus
import norm_para
from bench.measure import log
from deepemocluster.features import load_norm_term
from deepemocluster.labels import feature_paths, read_labels, validation_split
from utils import FEATURE_VAR, HOP_LENGTH, N_MELS, SAMPLE_RATE, TRAIN_SPLIT, atomic_path, save_mat

# Synthetic turns last 2.75-11 s (method §2): frames of a centred STFT, hop 256 at 16 kHz.
SYNTH_FRAMES = (1 + int(2.75 * SAMPLE_RATE) // HOP_LENGTH, 1 + int(11.0 * SAMPLE_RATE) // HOP_LENGTH)
SCALE_LABEL_FILE = "labels_consensus.csv"  # the v1.11+ name; splits Train and Development
SCALE_DEV_SPLIT = "Development"


# --- the generated demo corpus ---------------------------------------------------------------
class Corpus:
    """Paths of the generated corpus inside the work folder."""

    def __init__(self, root):
        self.root = root
        self.audio = os.path.join(root, "corpus", make_demo_corpus.AUDIO_DIR)
        self.predict = os.path.join(root, "corpus", make_demo_corpus.PREDICT_DIR)
        self.labels = os.path.join(root, "corpus", make_demo_corpus.LABEL_DIR, make_demo_corpus.LABEL_FILE)
        self.features = os.path.join(root, "Features")
        self.norm_dir = os.path.join(root, "NormTerm")
        self.cache_dir = os.path.join(root, "cache")
        self.model_dir = os.path.join(root, "models")


def make_corpus(root, n_train, n_eval, n_predict):
    """Synthesise the WAVs and labels (make_demo_corpus), quietly."""
    corpus = Corpus(root)
    argv = ["--out", os.path.join(root, "corpus"), "--train", str(n_train), "--validation", str(n_eval),
            "--test", str(n_eval), "--predict", str(n_predict), "--unlabeled", "0"]
    with contextlib.redirect_stdout(io.StringIO()):
        make_demo_corpus.main(argv)
    return corpus


def make_norm_term(labels_csv, features, norm_dir):
    term, _ = norm_para.compute_norm_term(labels_csv, features)
    norm_para.save_norm_term(term, norm_dir)
    return load_norm_term(norm_dir)


# --- the scale corpus: feature files without audio --------------------------------------------
def synthetic_mel(rng, frames):
    """A random but plausible (frames, 128) mel power spectrogram of peak-normalised speech,
    float32 as feat_extract writes it: a low-frequency hump falling off towards the high
    bands, syllable-rate loudness with dips, and log-normal detail (heavy-tailed, as power is)."""
    band = np.arange(N_MELS)
    envelope = (-2.5 + 2.5 * np.exp(-((band - rng.uniform(6.0, 16.0)) / 10.0) ** 2)
                - 2.0 * band / (N_MELS - 1) + rng.normal(0.0, 0.3))
    t = np.arange(frames) * HOP_LENGTH / SAMPLE_RATE
    loudness = np.minimum(1.5 * np.sin(2 * np.pi * rng.uniform(3.5, 5.0) * t + rng.uniform(0, 2 * np.pi)), 1.0)
    log10_power = envelope[None, :] + loudness[:, None] + rng.normal(0.0, 0.4, (frames, N_MELS))
    return np.power(10.0, log10_power).astype(np.float32)


def scale_stem(k):
    return f"MSP-PODCAST_{k // 1000:04d}_{k % 1000:04d}"


LABEL_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def write_labels_csv(path, rows):
    """A labels file in the v1.11+ column order (method §2)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
            w.writeheader()
            w.writerows(rows)


def write_scale_corpus(root, n_train, n_dev, source="synthetic", seed=0, template=None, every=5000):
    """A corpus of `n_train` Train and `n_dev` Development turns as .mat features and a labels
    CSV, with no audio: `source` 'synthetic' draws each turn with synthetic_mel (172-688
    frames, 2.75-11 s), 'copies' copies the feature files of `template` ({'Train': [(path,
    labels)], 'Development': [...]}) cyclically. Returns (labels CSV, feature folder, rows)."""
    feats = os.path.join(root, "Features")
    os.makedirs(feats, exist_ok=True)
    rows = []
    for k in range(n_train + n_dev):
        split = TRAIN_SPLIT if k < n_train else SCALE_DEV_SPLIT
        stem = scale_stem(k)
        path = os.path.join(feats, stem + ".mat")
        rng = np.random.default_rng([seed, k])
        if source == "synthetic":
            frames = int(rng.integers(SYNTH_FRAMES[0], SYNTH_FRAMES[1] + 1))
            save_mat(path, FEATURE_VAR, synthetic_mel(rng, frames))
            act, val, dom = (round(float(v), 2) for v in rng.uniform(1.0, 7.0, 3))
        elif source == "copies":
            pool = template[split]
            j = k if split == TRAIN_SPLIT else k - n_train
            src, (act, val, dom) = pool[j % len(pool)]
            shutil.copyfile(src, path)
        else:
            raise ValueError(f"unknown scale source {source!r}")
        rows.append({"FileName": stem + ".wav", "EmoClass": "N", "EmoAct": act, "EmoVal": val,
                     "EmoDom": dom, "SpkrID": k // 20, "Gender": ("Female", "Male")[k // 20 % 2],
                     "Split_Set": split})
        if every and (k + 1) % every == 0:
            log(f"  {k + 1} of {n_train + n_dev} feature files written")
    labels = os.path.join(root, "Labels", SCALE_LABEL_FILE)
    write_labels_csv(labels, rows)
    return labels, feats, rows


def subset_labels(rows, path, n_train, n_dev):
    """A labels CSV with the first `n_train` Train and first `n_dev` Development rows."""
    train = [r for r in rows if r["Split_Set"] == TRAIN_SPLIT][:n_train]
    dev = [r for r in rows if r["Split_Set"] == SCALE_DEV_SPLIT][:n_dev]
    write_labels_csv(path, train + dev)
    return path


def scale_template(corpus):
    """The generated corpus's Train and Validation features and labels, for 'copies'."""
    template = {}
    val = validation_split(corpus.labels)
    for split, out in ((TRAIN_SPLIT, TRAIN_SPLIT), (val, SCALE_DEV_SPLIT)):
        stems, labels = read_labels(corpus.labels, split, ("Act", "Val", "Dom"))
        paths = feature_paths(corpus.features, stems)
        template[out] = [(p, (labels["Act"][i], labels["Val"][i], labels["Dom"][i]))
                         for i, p in enumerate(paths)]
    return template
