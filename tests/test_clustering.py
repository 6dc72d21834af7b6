"""Tests for clustering.py: faiss k-means pseudo-labels and NMI (method §6 steps 3, 4, 8)."""
import numpy as np
import pytest

from clustering import nmi, run_kmeans


def blobs(seed=0, n_blobs=5, per_blob=60, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (n_blobs, dim))
    truth = np.repeat(np.arange(n_blobs), per_blob)
    x = centres[truth] + rng.normal(0, 0.5, (len(truth), dim))
    return x.astype(np.float32), truth


def test_kmeans_recovers_separated_blobs():
    x, truth = blobs()
    # k-means here is plain Lloyd from K random points (no k-means++, method §6.3), so it
    # recovers the blobs when the seeded start hits each one; seed 2 does.
    assignment, loss = run_kmeans(x, 5, seed=2, use_gpu=False)
    assert assignment.shape == (300,) and assignment.dtype == np.int64
    assert nmi(truth, assignment) == pytest.approx(1.0, abs=1e-12)
    # One-to-one: each blob maps to one cluster, all five clusters used.
    mapping = {t: set(assignment[truth == t]) for t in range(5)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len(set.union(*mapping.values())) == 5
    # The objective is the sum of squared distances to the blob means.
    sse = sum(((x[truth == t] - x[truth == t].mean(0)) ** 2).sum() for t in range(5))
    assert loss == pytest.approx(sse, rel=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_kmeans_result_is_a_converged_partition(seed):
    """Whatever the seed: every point is nearest to the mean of its own cluster, no
    blob is split between clusters, and the loss is the partition's SSE."""
    x, truth = blobs()
    a, loss = run_kmeans(x, 5, seed=seed, use_gpu=False)
    used = np.unique(a)
    assert set(used) <= set(range(5))
    means = np.stack([x[a == k].mean(0) for k in used])
    nearest = used[((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    np.testing.assert_array_equal(nearest, a)
    sse = sum(((x[a == k] - x[a == k].mean(0)) ** 2).sum() for k in used)
    assert loss == pytest.approx(sse, rel=1e-4)


def test_kmeans_same_seed_same_assignment():
    x, _ = blobs(seed=1)
    noise = np.random.default_rng(9).normal(0, 3, x.shape).astype(np.float32)
    y = x + noise    # overlapping clusters, so the result depends on the start
    a1, l1 = run_kmeans(y, 6, seed=123, use_gpu=False)
    a2, l2 = run_kmeans(y, 6, seed=123, use_gpu=False)
    np.testing.assert_array_equal(a1, a2)
    assert l1 == l2
    others = [run_kmeans(y, 6, seed=s, use_gpu=False)[0] for s in (1, 2, 3, 4)]
    assert any(not np.array_equal(a1, o) for o in others)


def test_kmeans_needs_enough_points():
    with pytest.raises(ValueError, match="at least 10"):
        run_kmeans(np.zeros((5, 4), np.float32), 10, seed=0, use_gpu=False)


def test_nmi_of_relabelled_permutation_is_one():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 6, 500)
    perm = rng.permutation(6)
    assert nmi(a, perm[a]) == pytest.approx(1.0, abs=1e-12)
    assert nmi(perm[a], a) == pytest.approx(1.0, abs=1e-12)
    b = rng.integers(0, 6, 500)
    assert 0 <= nmi(a, b) < 0.05


def test_kmeans_runs_where_the_network_runs(monkeypatch):
    """--device cpu keeps k-means off the GPU; cuda:N clusters on GPU N when faiss can."""
    import torch

    import clustering

    monkeypatch.setattr(clustering, "faiss_has_gpu", lambda: True)
    assert clustering.kmeans_on_gpu(torch.device("cpu")) == (False, 0)
    assert clustering.kmeans_on_gpu(None) == (False, 0)
    assert clustering.kmeans_on_gpu(torch.device("cuda")) == (True, 0)
    assert clustering.kmeans_on_gpu(torch.device("cuda:1")) == (True, 1)
    monkeypatch.setattr(clustering, "faiss_has_gpu", lambda: False)
    assert clustering.kmeans_on_gpu(torch.device("cuda:1")) == (False, 1)


def test_training_passes_its_device_to_kmeans(monkeypatch):
    import torch

    import main as train_main
    from deepemocluster.compute import Settings

    calls = []
    monkeypatch.setattr(train_main, "kmeans_on_gpu", lambda device: (device.type == "cuda", 3))
    monkeypatch.setattr(train_main, "run_kmeans",
                        lambda x, k, seed, use_gpu, gpu_index: (calls.append((use_gpu, gpu_index)),
                                                                (np.zeros(len(x), np.int64), 0.0))[1])
    x = np.zeros((20, 4), np.float32)
    train_main.cluster_chunks(x, 2, np.random.default_rng(0), Settings(torch.device("cpu")))
    assert calls == [(False, 3)]
