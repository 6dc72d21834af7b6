"""Parallel feature extraction gives the same features as one worker."""
import glob
import os

import numpy as np

import feat_extract
from utils import FEATURE_VAR, load_mat


def test_two_workers_match_one_worker(tiny_corpus, tmp_path):
    bad = tmp_path / "audio"
    bad.mkdir()
    for path in sorted(glob.glob(os.path.join(tiny_corpus["audio"], "*.wav")))[:6]:
        os.symlink(path, bad / os.path.basename(path))
    (bad / "broken.wav").write_text("not audio")
    summary = feat_extract.extract_folder(str(bad), str(tmp_path / "feats"), workers=2)
    assert summary["extracted"] == 6 and len(summary["failed"]) == 1
    assert os.path.basename(summary["failed"][0][0]) == "broken.wav"
    for path in sorted(glob.glob(str(bad / "MSP*.wav"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        one = load_mat(os.path.join(tiny_corpus["features"], stem + ".mat"), FEATURE_VAR)
        two = load_mat(str(tmp_path / "feats" / (stem + ".mat")), FEATURE_VAR)
        assert one.shape == two.shape
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
