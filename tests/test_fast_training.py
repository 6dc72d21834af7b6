"""The fast training path equals the original numerics to float rounding: the folded
evaluation copies used for the k-means features and validation, and the compiled encoder."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main as train_main
from deepemocluster import compute
from dataloader import LabelledTurns
from deepemocluster.features import load_norm_term
from model import build_model, evaluation_copy, on_fast_path
from deepemocluster.compute import Settings
from utils import CHUNKS_PER_TURN, ccc_loss


def trained_looking(mt, seed=0):
    """A model with non-trivial BatchNorm statistics and affine parameters (as after training)."""
    torch.manual_seed(seed)
    model = build_model(mt, 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def fast_and_original(mt, seed=0):
    original = trained_looking(mt, seed)
    fast = copy.deepcopy(original).to(memory_format=torch.channels_last)
    return fast, original


@pytest.mark.parametrize("mt", ["Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet"])
def test_evaluation_copy_equals_evaluation_mode(mt):
    fast, original = fast_and_original(mt)
    assert on_fast_path(fast) and not on_fast_path(original)
    assert evaluation_copy(original) is original and not original.training
    folded = evaluation_copy(fast)
    assert folded is not fast and fast.training                     # the training model is untouched
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.cnn_features)
    x = torch.randn(3, CHUNKS_PER_TURN, 62, 128)
    with torch.no_grad():
        want = original.eval()(x)
        got = folded(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_chunk_features_and_validation_on_the_fast_path_equal_the_original(tiny_corpus, tmp_path):
    norm = load_norm_term(tiny_corpus["norm"], ("Val",))
    train = LabelledTurns("Train", tiny_corpus["labels"], tiny_corpus["features"], norm, "Val",
                          str(tmp_path / "cache"))
    val = LabelledTurns("Validation", tiny_corpus["labels"], tiny_corpus["features"], norm, "Val",
                        str(tmp_path / "cache"))
    fast, original = fast_and_original("Temp-Trans", 1)
    cpu = Settings(torch.device("cpu"))
    for m in (fast, original):
        m.remove_cluster_head()
    got = train_main.compute_chunk_features(fast, train.cache, 5, cpu)
    want = train_main.compute_chunk_features(original, train.cache, 5, cpu)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for m in (fast, original):
        m.restore_cluster_head()
    fast.top_layer_class.load_state_dict(original.top_layer_class.state_dict())
    got = train_main.validate(fast, val, 4, cpu, np.random.default_rng(3))
    want = train_main.validate(original, val, 4, cpu, np.random.default_rng(3))
    assert got == pytest.approx(want, rel=1e-5)


def train_steps(model, batches, targets, labels):
    """Plain joint-training steps; returns the losses, the gradients of the last step and the
    BatchNorm running statistics afterwards."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for x, t, y in zip(batches, targets, labels):
        cluster, attri, _ = model(x)
        loss = F.cross_entropy(cluster, t) + ccc_loss(attri, y.repeat_interleave(CHUNKS_PER_TURN))
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    return losses, grads, stats


def relative_error(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_compiled_encoder_trains_as_the_eager_one():
    """Full batches and the smaller last batch through the compiled graph. Losses,
    gradients and BatchNorm statistics equal the original (NCHW, eager) to float rounding:
    no further from it than the eager channels-last fast path already is."""
    fast, original = fast_and_original("Temp-GRU", 2)
    compiled = copy.deepcopy(fast)
    compiled.compile_encoder()
    calls = []
    graph = compiled._compiled_encoder
    compiled._compiled_encoder = lambda x: calls.append(len(x)) or graph(x)
    gen = torch.Generator().manual_seed(0)
    sizes = [2, 2, 1]                                                # the last batch is smaller
    batches = [torch.randn(n, CHUNKS_PER_TURN, 62, 128, generator=gen) for n in sizes]
    targets = [torch.randint(0, 4, (n * CHUNKS_PER_TURN,), generator=gen) for n in sizes]
    labels = [torch.randn(n, generator=gen) for n in sizes]
    runs = {}
    for name, model in (("original", original), ("eager", fast), ("compiled", compiled)):
        torch.manual_seed(5)
        runs[name] = train_steps(model.train(), batches, targets, labels)
    assert calls == [2 * CHUNKS_PER_TURN] * 2 + [CHUNKS_PER_TURN]   # every batch, compiled
    want = runs["original"]
    np.testing.assert_allclose(runs["compiled"][0], want[0], rtol=1e-5)
    for name, grad in want[1].items():
        if grad.norm() < 1e-6:        # conv biases before BatchNorm: their gradient is 0 up to rounding
            continue
        allowed = 2 * relative_error(runs["eager"][1][name], grad) + 1e-5
        assert relative_error(runs["compiled"][1][name], grad) <= allowed, name
    for name, stat in want[2].items():
        torch.testing.assert_close(runs["compiled"][2][name], stat, rtol=1e-4, atol=1e-6, msg=name)
    # Checkpoints and copies never see the compiled graph.
    assert set(compiled.state_dict()) == set(original.state_dict())
    assert "_compiled_encoder" not in copy.deepcopy(compiled).__dict__


def test_a_failing_compilation_falls_back_to_eager_with_a_warning():
    model = trained_looking("Temp-Triplet").train()
    model.compile_encoder()

    def broken(x):
        raise RuntimeError("no C++ compiler found\nmore detail")
    model._compiled_encoder = broken
    x = torch.randn(1, CHUNKS_PER_TURN, 62, 128)
    with pytest.warns(UserWarning, match="torch.compile of the encoder failed .RuntimeError: no C.. "
                                         "compiler found.; running eagerly"):
        out = model(x)
    assert "_compiled_encoder" not in model.__dict__
    torch.manual_seed(0)
    assert out[1].shape == (1, CHUNKS_PER_TURN)


def test_when_auto_compiles(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(compute, "cxx_compiler", lambda: "/usr/bin/c++")
    fp32, bf16 = compute.COMPILE_MIN_BATCHES["fp32"], compute.COMPILE_MIN_BATCHES["bf16"]
    assert fp32 < bf16                                              # an fp32 step gains more
    assert compute.use_compile("auto", cpu, "auto", fp32)
    assert not compute.use_compile("auto", cpu, "auto", fp32 - 1)    # too short to pay for compiling
    assert compute.use_compile("auto", cpu, "auto", bf16, bf16=True)
    assert not compute.use_compile("auto", cpu, "auto", bf16 - 1, bf16=True)
    assert compute.use_compile("auto", cpu, "bf16", bf16, bf16=True)
    assert not compute.use_compile("auto", cpu, "fp32", 10 * bf16)   # the original numerics exactly
    assert not compute.use_compile("auto", cuda, "auto", 10 * bf16)
    assert compute.use_compile("on", cpu, "fp32", 1) and not compute.use_compile("off", cpu, "auto", 10 * bf16)
    monkeypatch.setattr(compute, "cxx_compiler", lambda: None)
    assert not compute.use_compile("auto", cpu, "auto", 10 * bf16)


def test_evaluation_in_passes_equals_one_pass():
    from model import CPU_TURNS_PER_PASS, evaluate, predict_batch, turns_per_pass

    fast, original = fast_and_original("Temp-Trans", 4)
    folded = evaluation_copy(fast)
    cpu = torch.device("cpu")
    assert turns_per_pass(folded, cpu, 64) == CPU_TURNS_PER_PASS
    assert turns_per_pass(original.eval(), cpu, 64) == 64       # --precision fp32: one pass
    x = torch.randn(5, CHUNKS_PER_TURN, 62, 128)                    # passes of 2, 2 and 1 turns
    with torch.no_grad():
        whole = folded(x)
    for got, want in zip(evaluate(folded, x, Settings(cpu)), whole):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (pred, emb), = predict_batch([folded], x, Settings(cpu), embeddings=True)
    with torch.no_grad():
        want_pred, want_emb = folded.predict_turns(x, embeddings=True)
    np.testing.assert_allclose(pred, want_pred.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb, want_emb.numpy(), rtol=1e-5, atol=1e-6)


def test_freed_memory_is_reused_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: reuse_freed_memory does nothing here, by design")
    assert compute.reuse_freed_memory() is True
