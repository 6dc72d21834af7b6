"""k-means pseudo-labels (method §6 steps 3, 4 and 8) with faiss."""
import numpy as np

from utils import CHUNKS_PER_TURN, UserError

KMEANS_ITERATIONS = 20
NO_SUBSAMPLING = 1 << 30


def faiss_has_gpu():
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def kmeans_on_gpu(device):
    """(use_gpu, GPU index) for k-means beside a network on `device`: the same CUDA device
    when faiss has GPU support, the CPU for a CPU run (`--device cpu` keeps off the GPU)."""
    if device is None or device.type != "cuda":
        return False, 0
    return faiss_has_gpu(), device.index or 0


def run_kmeans(features, n_clusters, seed, use_gpu=None, gpu_index=0):
    """Cluster chunk vectors: K clusters, 20 iterations, L2, every point used, no PCA.

    Runs on GPU `gpu_index` when `use_gpu` (default: when faiss has GPU support and a GPU is
    there). Returns one cluster index per row and the final k-means objective.
    """
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    if n < n_clusters:
        raise ValueError(f"k-means needs at least {n_clusters} points, got {n}")
    clus = faiss.Clustering(d, n_clusters)
    clus.niter = KMEANS_ITERATIONS
    clus.seed = int(seed)
    clus.max_points_per_centroid = NO_SUBSAMPLING
    clus.min_points_per_centroid = 1
    clus.verbose = False
    if use_gpu is None:
        use_gpu = faiss_has_gpu()
    if use_gpu:
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = int(gpu_index)
        index = faiss.GpuIndexFlatL2(res, d, cfg)
    else:
        index = faiss.IndexFlatL2(d)
    clus.train(x, index)
    _, nearest = index.search(x, 1)
    stats = clus.iteration_stats
    loss = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    return nearest.reshape(-1).astype(np.int64), loss


def nmi(previous, current):
    """Normalised mutual information between two cluster assignments of the same chunks."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(previous, current))


def check_cluster_count(n_turns, k, what):
    if n_turns * CHUNKS_PER_TURN < k:
        raise UserError(f"{what} has {n_turns} turn(s), {n_turns * CHUNKS_PER_TURN} chunks: "
                        f"too few for -nc {k} clusters")
