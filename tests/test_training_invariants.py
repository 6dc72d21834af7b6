"""Invariants of one DeepEmoCluster epoch (method §6) that the end-to-end tests cannot see:
which optimisers step where, how pseudo-labels and labels line up with the chunks,
the row order of the k-means inputs, the validation loss, and the semi-supervised
variant's choice of unlabelled turns.
"""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main as train_main
from dataloader import ChunkCache, LabelledTurns
from deepemocluster import corpus
from deepemocluster.features import load_norm_term
from model import build_model
from deepemocluster.compute import Settings
from deepemocluster.training_files import TrainingState
from utils import CHUNKS_PER_TURN, FRAMES_PER_CHUNK, N_MELS, ccc_loss

K = 3
CPU = Settings(torch.device("cpu"))


class CodedCache:
    """A stand-in chunk cache: every value of chunk c of turn t is t + c / 100, so a
    batch's chunks say which turn and chunk they are."""

    def __init__(self, n_turns):
        self.n_turns = n_turns

    def __len__(self):
        return self.n_turns

    def read(self, indices):
        code = np.asarray(indices, dtype=np.float32)[:, None] + np.arange(CHUNKS_PER_TURN) / 100
        return np.broadcast_to(code[:, :, None, None].astype(np.float32),
                               (len(indices), CHUNKS_PER_TURN, FRAMES_PER_CHUNK, N_MELS)).copy()


def decode(chunks):
    """(turn, chunk) of every chunk of a (turns, 11, 62, 128) batch, turn-major."""
    code = chunks[:, :, 0, 0].reshape(-1).double()
    turn = torch.round(code).long()
    return turn, torch.round((code - turn) * 100).long()


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model("Temp-Triplet", K)
    m.remove_cluster_head()
    return m


def test_make_optimizers_holds_every_parameter_but_the_cluster_top_layer(model):
    sgd, adam = train_main.make_optimizers(model)
    model.restore_cluster_head()
    every = {id(p) for p in model.parameters()}
    top = {id(p) for p in model.top_layer_class.parameters()}
    for opt in (sgd, adam):
        held = [id(p) for g in opt.param_groups for p in g["params"]]
        assert len(held) == len(set(held))
        assert set(held) == every - top
    assert sgd.param_groups[0]["lr"] == 0.001 and adam.param_groups[0]["lr"] == 0.0005
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adam, torch.optim.Adam)


def test_pseudo_labels_and_labels_follow_the_turn_major_chunk_order(model, monkeypatch):
    """Across batch boundaries and a last partial batch, with turns drawn repeatedly."""
    n_turns, batch = 7, 3
    cache = CodedCache(n_turns)
    assignment = (np.arange(n_turns * CHUNKS_PER_TURN) * 7 % K).astype(np.int64)
    labels = np.linspace(-1, 1, n_turns).astype(np.float32)
    drawn = np.array([5, 0, 5, 3, 6, 1, 2, 2, 4, 6])          # 10 turns: batches 3, 3, 3, 1
    seen = {"chunks": [], "targets": [], "y": []}
    model.register_forward_hook(lambda m, inp, out: seen["chunks"].append(inp[0].detach()))
    real_ce, real_ccc = F.cross_entropy, train_main.ccc_loss

    def spy_ce(logits, target, *a, **kw):
        seen["targets"].append(target.clone())
        return real_ce(logits, target, *a, **kw)

    def spy_ccc(pred, y):
        seen["y"].append(y.clone())
        return real_ccc(pred, y)
    monkeypatch.setattr(F, "cross_entropy", spy_ce)
    monkeypatch.setattr(train_main, "ccc_loss", spy_ccc)
    optimizers = train_main.make_optimizers(model)
    model.restore_cluster_head()
    state = TrainingState(model, optimizers, np.random.default_rng(0))
    train_main.train_one_epoch(state, cache, drawn, assignment, batch, CPU, labels)
    assert [len(c) for c in seen["chunks"]] == [3, 3, 3, 1]
    turns, chunk_ids = zip(*(decode(c) for c in seen["chunks"]))
    turns, chunk_ids = torch.cat(turns), torch.cat(chunk_ids)
    assert turns.tolist() == np.repeat(drawn, CHUNKS_PER_TURN).tolist()
    assert chunk_ids.tolist() == list(range(CHUNKS_PER_TURN)) * len(drawn)
    targets = torch.cat(seen["targets"])
    assert targets.tolist() == assignment[(turns * CHUNKS_PER_TURN + chunk_ids).numpy()].tolist()
    y = torch.cat(seen["y"])
    np.testing.assert_array_equal(y.numpy(), labels[turns.numpy()])


def test_each_optimiser_steps_on_every_supervised_batch(model, monkeypatch):
    steps = []
    for cls in (torch.optim.SGD, torch.optim.Adam):
        real = cls.step

        def counted(self, *a, _real=real, **kw):
            steps.append(self)
            return _real(self, *a, **kw)
        monkeypatch.setattr(cls, "step", counted)
    sgd, adam = train_main.make_optimizers(model)
    model.restore_cluster_head()
    drawn = np.arange(5)
    assignment = np.arange(5 * CHUNKS_PER_TURN) % K
    state = TrainingState(model, (sgd, adam), np.random.default_rng(0))
    train_main.train_one_epoch(state, CodedCache(5), drawn, assignment, 2, CPU,
                               np.zeros(5, np.float32) + [0, 1, 2, 3, 4])
    n_batches = 3
    assert len(steps) == 3 * n_batches
    top = [o for o in steps if o is not sgd and o is not adam]
    assert steps.count(sgd) == steps.count(adam) == len(top) == n_batches
    assert len({id(o) for o in top}) == 1                       # one fresh top-layer SGD per epoch
    assert top[0].param_groups[0]["lr"] == 0.05
    assert {id(p) for p in top[0].param_groups[0]["params"]} == \
        {id(p) for p in model.top_layer_class.parameters()}


def test_compute_chunk_features_rows_are_turn_major(tiny_corpus, tmp_path):
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))
    data = LabelledTurns("Train", tiny_corpus["labels"], tiny_corpus["features"], norm, "Val",
                         str(tmp_path / "cache"))
    torch.manual_seed(1)
    model = build_model("Temp-GRU", K).eval()
    model.remove_cluster_head()
    out = train_main.compute_chunk_features(model, data.cache, 5, CPU)
    assert out.shape == (len(data) * CHUNKS_PER_TURN, 256)
    with torch.no_grad():
        for turn in range(len(data)):
            cluster, _, _ = model(torch.from_numpy(data.cache.read([turn])))
            for chunk in range(CHUNKS_PER_TURN):
                np.testing.assert_allclose(out[turn * CHUNKS_PER_TURN + chunk], cluster[chunk].numpy(),
                                           rtol=1e-4, atol=1e-6)


def test_validate_is_the_mean_per_batch_ccc_loss(tiny_corpus, tmp_path):
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))
    data = LabelledTurns("Validation", tiny_corpus["labels"], tiny_corpus["features"], norm, "Val",
                         str(tmp_path / "cache"))
    torch.manual_seed(2)
    model = build_model("Temp-CNN", K)
    got = train_main.validate(model, data, 4, CPU, np.random.default_rng(5))
    order = np.random.default_rng(5).permutation(len(data))
    model.eval()
    losses = []
    with torch.no_grad():
        for s in range(0, len(order), 4):
            idx = order[s:s + 4]
            _, attri, _ = model(torch.from_numpy(data.cache.read(idx)))
            y = torch.from_numpy(np.repeat(data.norm_labels[idx], CHUNKS_PER_TURN))
            losses.append(float(ccc_loss(attri, y)))
    assert len(losses) == 2                                     # 6 turns: batches of 4 and 2
    assert got == pytest.approx(float(np.mean(losses)), rel=1e-5)


# --- semi-supervised variant (method §6, the authors' release) -----------------------------------
def test_unlabelled_subset_is_the_authors_choice_and_leaves_random_streams_alone():
    state = np.random.get_state()
    np.random.seed(1234)
    before = np.random.get_state()[1].copy()
    chosen = corpus.unlabelled_subset(50, 12)
    assert np.array_equal(np.random.get_state()[1], before)   # the global stream is untouched
    # The recipe of method §6, run on numpy's global legacy generator.
    np.random.seed(99)
    indices = np.arange(50)
    np.random.shuffle(indices)
    np.random.set_state(state)
    assert chosen.tolist() == indices[:12].tolist()
    assert corpus.unlabelled_subset(50, 12).tolist() == chosen.tolist()
    assert corpus.unlabelled_subset(50, 5).tolist() == chosen[:5].tolist()


def test_unlabelled_pool_holds_the_chosen_files_of_the_sorted_pool(tiny_corpus, tmp_path):
    names = sorted(os.listdir(tiny_corpus["features"]))
    args = argparse.Namespace(unlabeled_features=tiny_corpus["features"], unlabel_size=6,
                              num_clusters=K, cache_dir=str(tmp_path / "cache"), cache_dtype="float32")
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))
    pool = train_main.unlabelled_pool(args, norm)
    mats = [n for n in names if n.endswith(".mat")]
    assert pool.meta["files"] == [mats[i] for i in corpus.unlabelled_subset(len(mats), 6)]


def test_unsupervised_stage_steps_sgd_but_not_adam(tiny_corpus, tmp_path):
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))
    data = LabelledTurns("Train", tiny_corpus["labels"], tiny_corpus["features"], norm, "Val",
                         str(tmp_path / "cache"))
    paths = [os.path.join(tiny_corpus["features"], s + ".mat") for s in data.stems[:8]]
    pool = ChunkCache.build(str(tmp_path / "pool.npy"), paths, norm["features"])
    torch.manual_seed(3)
    model = build_model("Temp-Trans", K)
    model.remove_cluster_head()
    optimizers = train_main.make_optimizers(model)
    rng = np.random.default_rng(0)
    # A supervised epoch first, so that Adam has state (step count and moments).
    feats = train_main.compute_chunk_features(model, data.cache, 4, CPU)
    assignment = train_main.cluster_chunks(feats, K, rng, CPU)
    model.restore_cluster_head()
    train_main.train_one_epoch(TrainingState(model, optimizers, rng), data.cache, np.arange(len(data)),
                               assignment, 4, CPU, data.norm_labels)
    adam = optimizers[1]
    adam_before = {id(p): {k: v.clone() for k, v in s.items()} for p, s in adam.state.items()}
    assert adam_before and all(float(s["step"]) == 4 for s in adam_before.values())
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = argparse.Namespace(batch_size=4, num_clusters=K)
    loss = train_main.unsupervised_stage(TrainingState(model, optimizers, rng, epoch=1), pool, args, CPU)
    assert np.isfinite(loss)
    for p, s in adam.state.items():
        for key, value in s.items():
            assert torch.equal(value, adam_before[id(p)][key]), key
    after = dict(model.named_parameters())
    assert not torch.equal(after["cnn_features.0.weight"], params_before["cnn_features.0.weight"])
    assert not torch.equal(after["temporal_net.linear1.weight"], params_before["temporal_net.linear1.weight"])
    for name in ("emo_regressor.0.weight", "top_layer_attri.weight", "top_layer_attri.bias"):
        assert torch.equal(after[name], params_before[name]), name
