"""Item 1 and the chunk cache: feature-extraction rates (one worker and several) and the build rate of
the Train chunk cache the epoch and online testing read."""
import os
import shutil

import feat_extract
from bench import EMOTION
from bench.measure import rate, timed
from dataloader import LabelledTurns
from deepemocluster.features import walk_audio


def feature_folder(corpus, n_files):
    """A folder of `n_files` WAVs, hard links cycling over the corpus audio: on a corpus of
    this size the workers' start-up is the small share it is on a real corpus."""
    wavs, _ = walk_audio(corpus.audio)
    folder = os.path.join(corpus.root, "feature_audio")
    os.makedirs(folder, exist_ok=True)
    for i in range(n_files):
        src = wavs[i % len(wavs)]
        dst = os.path.join(folder, f"{i:06d}_{os.path.basename(src)}")
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return folder


def bench_features(folder, output, workers, repeats, device):
    """feat_extract.extract_folder with overwrite: turns/s with one worker and with `workers`."""
    out = {}
    for w in sorted({1, workers}):
        summary = {}

        def run():
            summary.update(feat_extract.extract_folder(folder, output, w, overwrite=True))
            if summary["failed"]:
                raise RuntimeError(f"feature extraction failed: {summary['failed'][:3]}")
        times = timed(run, repeats, device)
        out[w] = rate(summary["extracted"], times) + (times,)
    return out


# --- chunk cache (read by the epoch and online testing) ------------------------------------
def bench_cache_build(corpus, norm, repeats, device):
    """Building the Train chunk cache (once per run on the fast path): turns/s."""
    n = {}

    def fresh():
        shutil.rmtree(os.path.join(corpus.root, "cache_build"), ignore_errors=True)

    def run():
        data = LabelledTurns("Train", corpus.labels, corpus.features, norm, EMOTION,
                             os.path.join(corpus.root, "cache_build"))
        n["turns"] = len(data)
    times = timed(run, repeats, device, setup=fresh)
    fresh()
    return rate(n["turns"], times) + (times,)
