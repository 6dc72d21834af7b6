"""Turns shorter than one chunk (method §4): in testing, 53–61 frames are chunked as the
original does (every chunk the whole, unpadded turn), 52 or fewer are padded; training pads."""
import csv
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

import online_testing
from dataloader import LabelledTurns
from deepemocluster.features import chunk_turn, is_whole_turn_chunked, load_norm_term
from model import ARCH, build_model, checkpoint_name, released_state_dict
from utils import CHUNKS_PER_TURN, FEATURE_VAR, FRAMES_PER_CHUNK, save_mat, save_torch


@pytest.mark.parametrize("frames, whole", [(70, False), (62, False), (61, True), (53, True),
                                           (52, False), (10, False)])
def test_which_turns_the_original_chunks_whole(frames, whole):
    # method §4: the original's step is int((T − 62) / 10), truncated toward zero.
    assert is_whole_turn_chunked(frames) == whole
    assert whole == (frames < 62 and int((frames - 62) / 10) == 0)


def test_chunk_turn_short_turn_rules():
    feat = np.random.default_rng(0).standard_normal((57, 128)).astype(np.float32)
    whole = chunk_turn(feat, whole_short_turns=True)
    assert whole.shape == (CHUNKS_PER_TURN, 57, 128)
    assert all(np.array_equal(c, feat) for c in whole)
    padded = chunk_turn(feat)
    assert padded.shape == (CHUNKS_PER_TURN, FRAMES_PER_CHUNK, 128)
    assert np.array_equal(padded[:, :57], whole) and not padded[:, 57:].any()
    tiny = chunk_turn(feat[:40], whole_short_turns=True)
    assert tiny.shape == (CHUNKS_PER_TURN, FRAMES_PER_CHUNK, 128) and not tiny[:, 40:].any()


def test_online_testing_chunks_53_to_61_frames_whole_and_pads_shorter(tiny_corpus, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(tiny_corpus["features"], features)
    rng = np.random.default_rng(3)
    short = {"turn_55.mat": rng.uniform(0, 4, (55, 128)), "turn_40.mat": rng.uniform(0, 4, (40, 128))}
    for name, feat in short.items():
        save_mat(str(features / name), FEATURE_VAR, feat.astype(np.float32))
    with open(tiny_corpus["labels"], newline="") as f:
        rows = list(csv.DictReader(f))
    test_rows = [r for r in rows if r["Split_Set"] == "Test1"]
    rows += [dict(test_rows[0], FileName="turn_55.wav", EmoVal="6.5"),
             dict(test_rows[0], FileName="turn_40", EmoVal="1.5")]
    labels = str(tmp_path / "labels.csv")
    with open(labels, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    torch.manual_seed(0)
    model = build_model("Temp-GRU", 4).eval()
    model_dir = tmp_path / "models"
    save_torch(str(model_dir / checkpoint_name(1, 4, 4, "Val", "Temp-GRU")),
               {"arch": ARCH, "state_dict": released_state_dict(model)})
    args = online_testing.parse_args([
        "-ep", "1", "-batch", "4", "-nc", "4", "-emo", "Val", "-mt", "Temp-GRU", "--features",
        str(features), "--labels", labels, "--norm-dir", tiny_corpus["norm"], "--model-dir",
        str(model_dir), "--cache-dir", str(tmp_path / "cache"), "--precision", "fp32"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ccc, pred, truth = online_testing.test_ccc(args)
    message = " ".join(str(w.message) for w in caught)
    assert "1 turn(s) of 53–61 frames were chunked as the original does" in message
    assert "turn_55.mat" in message
    assert "1 turn(s) shorter than 62 frames were padded with zeros" in message
    assert "turn_40.mat" in message
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))

    def expected(feat, whole):
        x = chunk_turn(norm["features"].apply(feat), whole)
        with torch.no_grad():
            y = float(model.predict_turns(torch.from_numpy(x)[None]))
        return y * norm["Val_std"] + norm["Val_mean"]
    assert pred[-2] == pytest.approx(expected(short["turn_55.mat"].astype(np.float32), True), abs=1e-5)
    assert pred[-1] == pytest.approx(expected(short["turn_40.mat"].astype(np.float32), False), abs=1e-5)
    # The whole-turn rule is not the padded one: the two give different predictions.
    assert expected(short["turn_55.mat"].astype(np.float32), False) != pytest.approx(pred[-2], abs=1e-6)
    np.testing.assert_array_equal(truth[-2:], [6.5, 1.5])
    # Training (no whole_short_turns) pads both.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LabelledTurns("Test1", labels, str(features), norm, "Val", str(tmp_path / "cache"))
    assert "2 turn(s) shorter than 62 frames were padded" in " ".join(str(w.message) for w in caught)
    assert os.path.isdir(tmp_path / "cache")
