"""Tests for model.py: the four temporal variants, the cluster head, the released
checkpoint layout, initialisation, loading and the triplet loss (method §5, §6)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import model as M
from utils import UserError

K = 7
TYPES = ("Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet")


def make(mt, k=K, seed=0):
    torch.manual_seed(seed)
    return M.build_model(mt, k)


def chunks(turns=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(turns, 11, 62, 128, generator=g).clamp(-3, 3)


# --- forward and the cluster head (method §5, §6 steps 1 and 6) ------------------------
@pytest.mark.parametrize("mt", TYPES)
def test_forward_shapes_and_head_off_on(mt):
    m = make(mt).eval()
    x = chunks(2)
    with torch.no_grad():
        cluster, attri, emb = m(x)
    assert cluster.shape == (22, K)
    assert attri.shape == (2, 11)
    assert emb.shape == (2, 11, 256)
    with torch.no_grad():
        seq = m.temporal(emb).reshape(-1, 256)
        hidden = m.classifier[0](seq)
        np.testing.assert_allclose(cluster.numpy(), m.top_layer_class(torch.relu(hidden)).numpy(),
                                   rtol=1e-5, atol=1e-7)
        # A turn's prediction is the mean of its chunk predictions.
        np.testing.assert_allclose(m.predict_turns(x).numpy(), attri.mean(dim=1).numpy(), rtol=1e-6)
    old_linear = m.classifier[0]
    old_top = m.top_layer_class.weight.detach().clone()

    m.remove_cluster_head()
    assert m.top_layer_class is None
    assert len(m.classifier) == 1 and isinstance(m.classifier[0], nn.Linear)
    with torch.no_grad():
        cluster_off, attri_off, _ = m(x)
    assert cluster_off.shape == (22, 256)
    np.testing.assert_allclose(cluster_off.numpy(), hidden.numpy(), rtol=1e-6, atol=1e-8)
    assert (cluster_off < 0).any(), "no ReLU after the Linear while the head is off"
    np.testing.assert_array_equal(attri_off.numpy(), attri.numpy())
    assert not any(k.startswith("top_layer_class") for k in m.state_dict())

    m.restore_cluster_head()
    assert m.classifier[0] is old_linear
    assert isinstance(m.classifier[1], nn.ReLU)
    top = m.top_layer_class
    assert isinstance(top, nn.Linear) and top.weight.shape == (K, 256)
    assert top.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert abs(top.weight.mean().item()) < 0.002
    assert torch.count_nonzero(top.bias) == 0
    assert not torch.equal(top.weight, old_top), "the restored top layer is fresh"
    with torch.no_grad():
        cluster_on, _, _ = m(x)
        expected_on = top(torch.relu(hidden))
    assert cluster_on.shape == (22, K)
    np.testing.assert_allclose(cluster_on.numpy(), expected_on.numpy(), rtol=1e-5, atol=1e-7)


# --- released checkpoint layout (method §5) ---------------------------------------------
CONV_SHAPES = [(32, 1, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3),
               (128, 128, 3, 3), (128, 128, 3, 3)]
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_shapes(mt, k=K):
    shapes = {}
    for block, shape in enumerate(CONV_SHAPES):
        conv, bn = 3 * block, 3 * block + 1
        shapes[f"cnn_features.module.{conv}.weight"] = shape
        shapes[f"cnn_features.module.{conv}.bias"] = (shape[0],)
        for key in BN_KEYS:
            shapes[f"cnn_features.module.{bn}.{key}"] = () if key == "num_batches_tracked" else (shape[0],)
    shapes.update({
        "cnn_out.module.0.weight": (256, 1024), "cnn_out.module.0.bias": (256,),
        "classifier.0.weight": (256, 256), "classifier.0.bias": (256,),
        "top_layer_class.weight": (k, 256), "top_layer_class.bias": (k,),
        "emo_regressor.0.weight": (256, 256), "emo_regressor.0.bias": (256,),
        "top_layer_attri.weight": (1, 256), "top_layer_attri.bias": (1,),
    })
    if mt == "Temp-GRU":
        for sfx in ("", "_reverse"):
            shapes.update({f"temporal_net.weight_ih_l0{sfx}": (384, 256),
                           f"temporal_net.weight_hh_l0{sfx}": (384, 128),
                           f"temporal_net.bias_ih_l0{sfx}": (384,),
                           f"temporal_net.bias_hh_l0{sfx}": (384,)})
    elif mt == "Temp-CNN":
        shapes.update({"temporal_net.0.weight": (16, 1, 5, 5), "temporal_net.0.bias": (16,),
                       "temporal_net.3.weight": (1, 16, 5, 5), "temporal_net.3.bias": (1,)})
        for idx, ch in ((1, 16), (4, 1)):
            for key in BN_KEYS:
                shapes[f"temporal_net.{idx}.{key}"] = () if key == "num_batches_tracked" else (ch,)
    elif mt == "Temp-Trans":
        shapes.update({
            "pos_enc.pe": (11, 1, 256),
            "temporal_net.self_attn.in_proj_weight": (768, 256),
            "temporal_net.self_attn.in_proj_bias": (768,),
            "temporal_net.self_attn.out_proj.weight": (256, 256),
            "temporal_net.self_attn.out_proj.bias": (256,),
            "temporal_net.linear1.weight": (256, 256), "temporal_net.linear1.bias": (256,),
            "temporal_net.linear2.weight": (256, 256), "temporal_net.linear2.bias": (256,),
            "temporal_net.norm1.weight": (256,), "temporal_net.norm1.bias": (256,),
            "temporal_net.norm2.weight": (256,), "temporal_net.norm2.bias": (256,),
        })
    return shapes


@pytest.mark.parametrize("mt", TYPES)
def test_released_state_dict_keys_and_shapes(mt):
    sd = M.released_state_dict(make(mt))
    expected = expected_shapes(mt)
    assert set(sd) == set(expected)
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert all(v.device.type == "cpu" for v in sd.values())


@pytest.mark.parametrize("mt", TYPES)
def test_cnn_out_dropout_and_temporal_config(mt):
    m = make(mt)
    if mt == "Temp-Triplet":
        assert not any(isinstance(x, nn.Dropout) for x in m.cnn_out)
        assert not hasattr(m, "temporal_net")
        assert len(m.cnn_out) == 2
    else:
        drops = [x for x in m.cnn_out if isinstance(x, nn.Dropout)]
        assert len(drops) == 1 and drops[0].p == 0.5
        assert isinstance(m.cnn_out[2], nn.Dropout)
    assert isinstance(m.cnn_out[0], nn.Linear) and isinstance(m.cnn_out[1], nn.ReLU)
    strides = [c.stride for c in m.cnn_features if isinstance(c, nn.Conv2d)]
    assert strides == [(1, 1), (1, 1), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert all(c.padding == (1, 1) for c in m.cnn_features if isinstance(c, nn.Conv2d))
    if mt == "Temp-GRU":
        g = m.temporal_net
        assert g.bidirectional and g.num_layers == 1 and g.hidden_size == 128 and g.input_size == 256
    if mt == "Temp-CNN":
        t = m.temporal_net
        assert t[0].padding == (2, 2) and t[3].padding == (2, 2)
        assert isinstance(t[6], nn.Dropout) and t[6].p == 0.3
    if mt == "Temp-Trans":
        t = m.temporal_net
        assert t.self_attn.num_heads == 1
        assert t.dropout.p == 0.3
        assert t.norm_first is False


def test_positional_encoding_is_sinusoidal():
    pe = M.released_state_dict(make("Temp-Trans"))["pos_enc.pe"]
    assert pe.shape == (11, 1, 256)
    pos = torch.arange(11, dtype=torch.float32)
    np.testing.assert_allclose(pe[:, 0, 0].numpy(), torch.sin(pos).numpy(), atol=1e-6)
    np.testing.assert_allclose(pe[:, 0, 1].numpy(), torch.cos(pos).numpy(), atol=1e-6)
    # General term: sin(p / 10000^(2i/256)), cos for the odd dimension.
    i = 10
    freq = 1 / 10000 ** (2 * i / 256)
    np.testing.assert_allclose(pe[:, 0, 2 * i].numpy(), np.sin(pos.numpy() * freq), atol=1e-5)
    np.testing.assert_allclose(pe[:, 0, 2 * i + 1].numpy(), np.cos(pos.numpy() * freq), atol=1e-5)


# --- initialisation (method §5) -----------------------------------------------------------
@pytest.mark.parametrize("mt", ["Temp-GRU", "Temp-Triplet"])
def test_initialisation_statistics(mt):
    m = make(mt, seed=3)
    convs = [c for c in m.cnn_features if isinstance(c, nn.Conv2d)]
    bns = [c for c in m.cnn_features if isinstance(c, nn.BatchNorm2d)]
    assert len(convs) == 7 and len(bns) == 7
    for c in convs:
        expected = math.sqrt(2.0 / (9 * c.out_channels))
        assert c.weight.std().item() == pytest.approx(expected, rel=0.15)
        assert abs(c.weight.mean().item()) < 0.3 * expected
        assert torch.count_nonzero(c.bias) == 0
    for b in bns:
        assert torch.all(b.weight == 1) and torch.count_nonzero(b.bias) == 0
    for lin in (m.cnn_out[0], m.classifier[0], m.emo_regressor[0], m.top_layer_class, m.top_layer_attri):
        assert lin.weight.std().item() == pytest.approx(0.01, rel=0.2)
        assert abs(lin.weight.mean().item()) < 0.003
        assert torch.count_nonzero(lin.bias) == 0


# --- loading (method §5) ----------------------------------------------------------------
def outputs(m, x):
    with torch.no_grad():
        return [t.numpy().copy() for t in m.eval()(x)]


@pytest.mark.parametrize("mt", TYPES)
def test_state_dict_with_and_without_module_infix(mt, tmp_path):
    src = make(mt, seed=4)
    # Move the BatchNorm statistics away from their initial values so they matter.
    src.train()
    with torch.no_grad():
        src(chunks(1, seed=9))
    x = chunks(1, seed=5)
    ref = outputs(src, x)
    with_module = M.released_state_dict(src)
    without = src.state_dict()
    assert any(".module." in k for k in with_module)
    assert not any(".module." in k for k in without)
    for sd in (with_module, without, {"module." + k: v for k, v in without.items()}):
        dst = make(mt, seed=99)
        dst.load_state_dict(M.canonical_state_dict(sd))
        for a, b in zip(outputs(dst, x), ref):
            np.testing.assert_array_equal(a, b)

    path = str(tmp_path / "ck.pth.tar")
    torch.save({"arch": "vgg16", "state_dict": with_module}, path)
    loaded = M.load_model(path, mt, K)
    assert not loaded.training
    for a, b in zip(outputs(loaded, x), ref):
        np.testing.assert_array_equal(a, b)


def test_transformer_state_dict_in_encoder_layout_loads():
    src = make("Temp-Trans", seed=6)
    sd = {k.replace("temporal_net.", "temporal_net.layers.0.", 1) if k.startswith("temporal_net.") else k: v
          for k, v in M.released_state_dict(src).items()}
    dst = make("Temp-Trans", seed=7)
    dst.load_state_dict(M.canonical_state_dict(sd))
    x = chunks(1)
    for a, b in zip(outputs(dst, x), outputs(src, x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("saved, asked", [("Temp-GRU", "Temp-CNN"), ("Temp-Triplet", "Temp-Trans"),
                                          ("Temp-Trans", "Temp-Triplet"), ("Temp-CNN", "Temp-GRU")])
def test_load_model_refuses_other_temporal_type(saved, asked, tmp_path):
    path = str(tmp_path / "ck.pth.tar")
    torch.save({"arch": "vgg16", "state_dict": M.released_state_dict(make(saved))}, path)
    with pytest.raises(UserError) as err:
        M.load_model(path, asked, K)
    assert saved in str(err.value) and asked in str(err.value)


def test_load_model_refuses_other_cluster_count(tmp_path):
    path = str(tmp_path / "ck.pth.tar")
    torch.save({"arch": "vgg16", "state_dict": M.released_state_dict(make("Temp-GRU", k=5))}, path)
    with pytest.raises(UserError) as err:
        M.load_model(path, "Temp-GRU", 7)
    msg = str(err.value)
    assert "5 clusters" in msg and "-nc 7" in msg
    assert M.load_model(path, "Temp-GRU", 5).top_layer_class.out_features == 5


def test_load_model_missing_and_unsafe_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        M.load_model(str(tmp_path / "none.pth.tar"), "Temp-GRU", K)

    path = str(tmp_path / "pickle.pth.tar")
    torch.save({"arch": "vgg16", "state_dict": {}, "extra": Thing()}, path)
    with pytest.raises(UserError, match="refusing"):
        M.load_model(path, "Temp-GRU", K)


class Thing:
    """An arbitrary class: a pickle holding it cannot be loaded with weights_only."""


# --- triplet (method §5 Temp-Triplet) -------------------------------------------------------
def test_triplet_indices_constraints_and_coverage():
    g = torch.Generator().manual_seed(0)
    anchors, positives = set(), set()
    for _ in range(300):
        triples = M.triplet_indices(g)
        assert len(triples) == 10
        for a, p, n in triples:
            assert 0 <= a <= 10 and 0 <= p <= 10 and 0 <= n <= 10
            assert p != a and abs(p - a) <= 2
            assert abs(n - a) > 2
            anchors.add(a)
            positives.add((a, p))
    assert anchors == set(range(11))
    # Every allowed positive of every anchor occurs.
    allowed = {(a, p) for a in range(11) for p in range(11) if p != a and abs(p - a) <= 2}
    assert positives == allowed


def test_triplet_indices_seeded():
    t1 = M.triplet_indices(torch.Generator().manual_seed(5))
    t2 = M.triplet_indices(torch.Generator().manual_seed(5))
    assert t1 == t2


def test_triplet_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(3, 11, 16, generator=g) * 0.3
    triples = [(0, 1, 5), (4, 6, 10), (10, 9, 0), (5, 3, 8), (2, 2 + 1, 9)]
    anchors = torch.stack([emb[b, a] for (a, p, n) in triples for b in range(3)])
    pos = torch.stack([emb[b, p] for (a, p, n) in triples for b in range(3)])
    neg = torch.stack([emb[b, n] for (a, p, n) in triples for b in range(3)])
    expected = F.triplet_margin_loss(anchors, pos, neg, margin=1.0, p=2)
    got = M.triplet_loss(emb, triples)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    d_ap = (anchors - pos).norm(dim=1)
    d_an = (anchors - neg).norm(dim=1)
    by_hand = torch.clamp(d_ap - d_an + 1.0, min=0).mean()
    assert float(got) == pytest.approx(float(by_hand), rel=1e-4)


def test_checkpoint_name():
    assert M.checkpoint_name(30, 64, 10, "Val", "Temp-Triplet") == \
        "TempDeepEmoCluster_epoch30_batch64_10clusters_Val_Temp-Triplet.pth.tar"
    assert M.checkpoint_name(30, 64, 30, "Act", "Temp-Trans", unlabel=500) == \
        "TempDeepEmoCluster_epoch30_batch64_30clusters_Act_Temp-Trans_unlabel500.pth.tar"
    assert M.checkpoint_name(2, 4, 4, "Act", "Temp-GRU", unlabel=0) == \
        "TempDeepEmoCluster_epoch2_batch4_4clusters_Act_Temp-GRU.pth.tar"
