"""Extract the 128-band mel power spectrogram of every WAV under a folder (method §3).

    python feat_extract.py --input AUDIO_DIR --output FEATURE_DIR [--workers 2]

One `<stem>.mat` per WAV, holding `Audio_data` (frames × 128). Files that
fail go to `extraction_errors.csv` in the output folder with the reason; the
exit status is 1 when any did. Existing complete outputs are skipped unless
`--overwrite`; every output is written to a temporary name and renamed.
"""
import argparse
import csv
import os
import time

from deepemocluster.corpus import AUDIO_DIR, FEATURES_DIR
from deepemocluster.features import extract_features, feature_pool, walk_audio
from utils import (FEATURE_VAR, FRAMES_PER_CHUNK, N_MELS, DiskFullError, UserError, atomic_path,
                   load_mat, progress, run_cli, save_mat)

ERROR_RECORD = "extraction_errors.csv"
AFTER_FULL_DISK = ("Free space, then run the same command again: the feature files already "
                   "written are kept and skipped.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=AUDIO_DIR, help="folder searched recursively for .wav files")
    p.add_argument("--output", default=FEATURES_DIR, help="folder for the .mat feature files")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def output_is_complete(path):
    try:
        feat = load_mat(path, FEATURE_VAR)
        return feat.ndim == 2 and feat.shape[0] > 0 and feat.shape[1] == N_MELS
    except Exception:
        return False


def extract_one(job):
    """Extract and save one file; returns (wav, status, frames, reason)."""
    wav, out = job
    try:
        feat = extract_features(wav)
        save_mat(out, FEATURE_VAR, feat)
    except DiskFullError:     # every later file would fail too: stop
        raise
    except Exception as err:  # recorded with the reason; the other files go on
        return wav, "failed", 0, str(err) or type(err).__name__
    status = "short" if feat.shape[0] < FRAMES_PER_CHUNK else "ok"
    return wav, status, feat.shape[0], ""


def extract_folder(input_dir, output_dir, workers=1, overwrite=False):
    """Extract every WAV under `input_dir`; returns a summary dict."""
    if not os.path.isdir(input_dir):
        raise UserError(f"input folder not found: {input_dir}")
    wavs, others = walk_audio(input_dir)
    os.makedirs(output_dir, exist_ok=True)
    jobs, skipped, seen = [], 0, {}
    for wav in wavs:
        stem = os.path.splitext(os.path.basename(wav))[0]
        if stem in seen:
            print(f"warning: {wav} has the same name as {seen[stem]}; only the first is extracted")
            continue
        seen[stem] = wav
        out = os.path.join(output_dir, stem + ".mat")
        if not overwrite and os.path.exists(out) and output_is_complete(out):
            skipped += 1
            continue
        jobs.append((wav, out))
    results = []
    if workers > 1 and len(jobs) > 1:
        with feature_pool(workers) as pool:
            results = list(progress(pool.map(extract_one, jobs, chunksize=8), total=len(jobs),
                                    desc="features", unit="file"))
    else:
        results = [extract_one(j) for j in progress(jobs, desc="features", unit="file")]
    failed = [r for r in results if r[1] == "failed"]
    short = [r for r in results if r[1] == "short"]
    error_record = os.path.join(output_dir, ERROR_RECORD)
    if failed:
        with atomic_path(error_record) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["File", "Reason"])
                w.writerows((r[0], r[3]) for r in failed)
    elif os.path.exists(error_record):
        os.remove(error_record)
    return {"found": len(wavs), "extracted": len(results) - len(failed), "skipped_existing": skipped,
            "failed": failed, "short": short, "non_audio": others, "error_record": error_record}


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    s = extract_folder(args.input, args.output, args.workers, args.overwrite)
    print(f"{s['found']} WAV file(s) under {args.input}: {s['extracted']} extracted, "
          f"{s['skipped_existing']} already done, {len(s['failed'])} failed; "
          f"{len(s['non_audio'])} non-audio file(s) skipped ({time.time() - t0:.1f}s)")
    if s["short"]:
        names = ", ".join(os.path.basename(r[0]) for r in s["short"][:5])
        print(f"{len(s['short'])} turn(s) shorter than one chunk ({FRAMES_PER_CHUNK} frames): {names}"
              " — they are padded when used")
    print(f"features: {args.output}")
    if s["failed"]:
        for wav, _, _, reason in s["failed"][:5]:
            print(f"  failed: {wav}: {reason}")
        print(f"error record: {s['error_record']}")
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main, disk_full=AFTER_FULL_DISK)
