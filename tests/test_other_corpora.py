"""A corpus rated on another scale (1–5, as IEMOCAP and MSP-IMPROV are): NormTerm holds the
Train split's label mean and std on that scale, and testing and prediction map the models'
outputs back with exactly those, so predictions come back on the corpus's scale."""
import csv
import os
import re
import shutil

import numpy as np
import pytest

import main as train_main
import norm_para
import online_testing
import prediction_process
from support import ROOT
from deepemocluster.plots import BAND_STDS, label_band
from deepemocluster.features import load_norm_term
from deepemocluster.labels import read_labels
from model import checkpoint_name
from utils import EMOTIONS, LABEL_COLUMN, TEST_SPLIT, TRAIN_SPLIT

MODEL = ["-ep", "1", "-batch", "4", "-nc", "4", "-mt", "Temp-CNN"]


def readme_conversion():
    """The Python of the README's worked example that maps the demo corpus's ratings onto 1–5."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## Other corpora"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_labels_on_a_1_to_5_scale_train_test_and_predict_on_that_scale(tiny_corpus, tmp_path):
    labels = str(tmp_path / "labels_1to5.csv")
    code = readme_conversion()
    for path, here in (("demo_1to5/Labels/labels_concensus.csv", tiny_corpus["labels"]),
                       ("demo_1to5/Labels/labels_1to5.csv", labels)):
        assert path in code
        code = code.replace(path, here)
    exec(code, {})
    with open(tiny_corpus["labels"], newline="") as f:
        before = list(csv.DictReader(f))
    with open(labels, newline="") as f:
        after = list(csv.DictReader(f))
    assert [r["FileName"] for r in after] == [r["FileName"] for r in before]
    for old, new in zip(before, after):
        for emo in EMOTIONS:
            assert float(new[LABEL_COLUMN[emo]]) == pytest.approx(1 + (float(old[LABEL_COLUMN[emo]]) - 1) * 4 / 6,
                                                                 abs=1e-12)
    norm_dir, model_dir = str(tmp_path / "NormTerm"), tmp_path / "models"
    data = ["--features", tiny_corpus["features"], "--labels", labels]
    norm_para.main(data + ["--norm-dir", norm_dir])

    # NormTerm: the Train split's label mean and (population) std on the 1–5 scale.
    _, train = read_labels(labels, TRAIN_SPLIT, EMOTIONS)
    norm = load_norm_term(norm_dir)
    assert all(1 <= train[e].min() and train[e].max() <= 5 for e in EMOTIONS)
    for emo in EMOTIONS:
        assert norm[f"{emo}_mean"] == np.mean(train[emo]) and norm[f"{emo}_std"] == np.std(train[emo])
    assert norm["Act_mean"] != load_norm_term(tiny_corpus["norm"])["Act_mean"]
    assert label_band(norm) == (min(np.mean(train[e]) - BAND_STDS * np.std(train[e]) for e in EMOTIONS),
                                max(np.mean(train[e]) + BAND_STDS * np.std(train[e]) for e in EMOTIONS))

    common = MODEL + data + ["--norm-dir", norm_dir, "--model-dir", str(model_dir),
                             "--cache-dir", str(tmp_path / "cache")]
    train_main.main(common + ["-emo", "Act"])
    ccc, tested, truth = online_testing.test_ccc(online_testing.parse_args(common + ["-emo", "Act"]))
    stems, test = read_labels(labels, TEST_SPLIT, ("Act",))
    np.testing.assert_array_equal(truth, test["Act"])           # CCC against the 1–5 labels
    assert np.isfinite(ccc) and train["Act"].min() <= tested.mean() <= train["Act"].max()

    # Prediction: the Act model under all three names, so every column holds the same normalised
    # output; each comes back with its own attribute's Train mean and std (to the float32
    # rounding of the scores, which score_rows computes from the models' float32 outputs).
    act = model_dir / checkpoint_name(1, 4, 4, "Act", "Temp-CNN")
    for emo in ("Dom", "Val"):
        shutil.copy(act, model_dir / checkpoint_name(1, 4, 4, emo, "Temp-CNN"))
    audio = tmp_path / "test_audio"
    audio.mkdir()
    for stem in stems:
        os.symlink(os.path.join(tiny_corpus["audio"], stem + ".wav"), audio / (stem + ".wav"))
    output = tmp_path / "pred.csv"
    assert prediction_process.main(MODEL + ["--input", str(audio), "--output", str(output), "--norm-dir",
                                            norm_dir, "--model-dir", str(model_dir)]) == 0
    with open(output, newline="") as f:
        predicted = {r["File_Name"]: r for r in csv.DictReader(f)}
    scores = np.array([[float(predicted[s + ".wav"][prediction_process.SCORE_COLUMNS[e]]) for e in EMOTIONS]
                       for s in stems])
    z = (scores - [norm[f"{e}_mean"] for e in EMOTIONS]) / [norm[f"{e}_std"] for e in EMOTIONS]
    np.testing.assert_allclose(z[:, 1], z[:, 0], rtol=0, atol=2e-6)
    np.testing.assert_allclose(z[:, 2], z[:, 0], rtol=0, atol=2e-6)
    # The same turns through testing (features from .mat) and prediction (from audio): one scale.
    np.testing.assert_allclose(scores[:, 0], tested, rtol=0, atol=1e-5)
    assert norm["Val_mean"] != norm["Act_mean"] and not np.allclose(scores[:, 2], scores[:, 0], atol=1e-3)
