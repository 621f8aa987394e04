"""Clustering and the GCD accuracy protocol (spec sections 2.6, 2.7 and 4).

- `split_cluster_acc_v2`: ONE Hungarian assignment over all evaluated points, then All / Old / New read
  off it (the protocol CMS, SimGCD, ... use). `split_cluster_acc_v1` (separate assignments) exists only so
  a test can show the two differ.
- `ward_linkage`: Ward agglomerative clustering. Below `max_exact_n` points it is scipy's exact
  `linkage(method="ward")`, which needs the N(N-1)/2 condensed distance matrix (65 GB at ImageNet-100's
  N ~ 127k). Above it (or with `backend="knn_graph"`) it is Ward constrained to a k-nearest-neighbour graph
  (scikit-learn's `ward_tree` with a sparse connectivity): memory O(N k) instead of O(N^2). The result
  is a merge list in scipy's linkage format either way.
- `cut_to_k`: undo the last K-1 merges (union-find over the first N-K merges), clusters numbered as scipy's
  `fcluster` numbers them. For a monotone linkage this equals the official
  `fcluster(t=linked[:,2][-K], criterion="distance")`, labels included; for the graph-constrained tree
  (whose heights need not be monotone) it still returns exactly K clusters.
- Accuracies renumber clusters canonically first (`canonical_labels`): with K below the class count the
  Hungarian assignment has tied optima, and which one is picked must not depend on cluster numbering.
- `estimate_k`: the official K search (cuts from K_old+1 upward, best Old accuracy, patience 50).
- `iterative_mean_shift_clustering`: IMS + Ward with labelled-accuracy stopping (patience 2).
- `semi_supervised_kmeans` (GCD's SSK) and `kmeans`.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from cvpr24.pipelines.cms.model import iterate_mean_shift, knn_indices

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- accuracy
def canonical_labels(y_pred: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0, 1, ... in order of first appearance in the data order. Accuracy is computed
    on these, so that when the Hungarian assignment has tied optima (K below the class count) the one
    scipy picks, and with it Old / New, depends on the partition alone, never on how clusters happen to be
    numbered (tree node ids, merge order, a float's last bit)."""
    y_pred = np.asarray(y_pred, int)
    _, first, inverse = np.unique(y_pred, return_index=True, return_inverse=True)
    rank = np.empty(len(first), int)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _count_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    d = int(max(y_pred.max(), y_true.max())) + 1
    w = np.zeros((d, d), dtype=np.int64)
    np.add.at(w, (y_pred, y_true), 1)
    return w


def hungarian_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Plain clustering accuracy (best one-to-one cluster -> class map)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if len(y_true) == 0:
        return float("nan")
    w = _count_matrix(y_true, canonical_labels(y_pred))
    r, c = linear_sum_assignment(w.max() - w)
    return float(w[r, c].sum() / len(y_true))


def split_cluster_acc_v2(y_true: np.ndarray, y_pred: np.ndarray, mask_old: np.ndarray) -> tuple[float, float, float]:
    """(All, Old, New) in [0, 1] from ONE Hungarian assignment over all points (spec section 4), as the GCD
    evaluation defines it: Old sums the matched counts of the classes seen under `mask_old` and divides by
    ALL points of those classes (not by the mask's size); New likewise for the classes under `~mask_old`.
    The two agree when the mask is "class is old", as in every table here. Cluster ids are made canonical
    first (`canonical_labels`), so a relabelling of the clusters never changes the result."""
    y_true, mask_old = np.asarray(y_true, int), np.asarray(mask_old, bool)
    y_pred = canonical_labels(y_pred)
    if len(y_true) == 0:
        return float("nan"), float("nan"), float("nan")
    w = _count_matrix(y_true, y_pred)
    r, c = linear_sum_assignment(w.max() - w)
    cluster_of = dict(zip(c, r, strict=True))  # GT class -> its matched cluster
    total = w[r, c].sum() / len(y_true)

    def part(classes: np.ndarray) -> float:
        n = int(sum(w[:, cl].sum() for cl in classes))
        if n == 0:
            return float("nan")
        return float(sum(w[cluster_of[cl], cl] for cl in classes) / n)

    return float(total), part(np.unique(y_true[mask_old])), part(np.unique(y_true[~mask_old]))


def split_cluster_acc_v1(y_true, y_pred, mask_old) -> tuple[float, float, float]:
    """The older protocol (separate Hungarian on old and new points; All = weighted mean). Not used."""
    y_true, y_pred, mask_old = np.asarray(y_true, int), np.asarray(y_pred, int), np.asarray(mask_old, bool)
    old = hungarian_acc(y_true[mask_old], y_pred[mask_old])
    new = hungarian_acc(y_true[~mask_old], y_pred[~mask_old])
    n_old, n = mask_old.sum(), len(y_true)
    return float((old * n_old + new * (n - n_old)) / n), old, new


# ------------------------------------------------------------------------------------ agglomerative
def _children_to_linkage(children: np.ndarray, distances: np.ndarray, n: int) -> np.ndarray:
    """scikit-learn's (children, distances) merge list -> scipy linkage rows (a, b, height, size)."""
    size = np.ones(2 * n - 1)
    z = np.zeros((len(children), 4))
    for i, (a, b) in enumerate(children):
        size[n + i] = size[a] + size[b]
        z[i] = (a, b, distances[i], size[n + i])
    return z


def knn_graph(x: np.ndarray, k: int, block_bytes: int = 32 * 2**20):
    """Symmetric sparse kNN connectivity (CSR) from chunked dot products: memory O(N k) plus one
    similarity block of at most `block_bytes` (the query chunk shrinks as N grows)."""
    from scipy.sparse import coo_matrix

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    chunk = max(64, block_bytes // (4 * max(len(x), 1)))
    idx = knn_indices(t, t, k, drop_top1=True, chunk=chunk).numpy()
    n = len(x)
    rows = np.repeat(np.arange(n), k)
    g = coo_matrix((np.ones(n * k, np.int8), (rows, idx.ravel())), shape=(n, n)).tocsr()
    return ((g + g.T) > 0).astype(np.int8)


def ward_linkage(x: np.ndarray, *, backend: str = "auto", max_exact_n: int = 20000, graph_k: int = 15) -> np.ndarray:
    """Ward linkage in scipy's format. backend: scipy (exact, O(N^2) memory), knn_graph (memory-bounded),
    auto (scipy up to `max_exact_n` points, then knn_graph with a warning)."""
    n = len(x)
    if backend == "auto":
        backend = "scipy" if n <= max_exact_n else "knn_graph"
        if backend == "knn_graph":
            log.warning("Ward on %d points: the exact linkage would need %.1f GB for its distance matrix; "
                        "using the kNN-graph-constrained Ward (k=%d, O(N k) memory)", n, n * (n - 1) / 2 * 8e-9,
                        graph_k)
    if backend == "scipy":
        from scipy.cluster.hierarchy import linkage

        return linkage(np.asarray(x, np.float64), method="ward")
    if backend == "knn_graph":
        from sklearn.cluster import ward_tree

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*connected components.*")
            children, _, _, _, dist = ward_tree(np.asarray(x, np.float64), connectivity=knn_graph(x, graph_k),
                                                return_distance=True)
        return _children_to_linkage(children, dist, n)
    raise ValueError(f"unknown linkage backend {backend!r} (scipy | knn_graph | auto)")


def _leaf_order(linked: np.ndarray) -> np.ndarray:
    """The dendrogram's leaves left to right: depth-first from the root, first child (column 0) first."""
    n = len(linked) + 1
    order, stack = [], [2 * n - 2]
    while stack:
        node = stack.pop()
        if node < n:
            order.append(node)
        else:
            a, b = int(linked[node - n, 0]), int(linked[node - n, 1])
            stack += [b, a]
    return np.asarray(order)


def cut_to_k(linked: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..K-1 after applying the first N-K merges of `linked` (exactly K clusters), numbered as
    scipy's `fcluster(linked, K, "maxclust")` numbers them (minus one): by the position of each cluster's
    leaves in the dendrogram's left-to-right order."""
    n = len(linked) + 1
    k = int(min(max(k, 1), n))
    parent = np.arange(2 * n - 1)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for i in range(n - k):
        a, b = int(linked[i, 0]), int(linked[i, 1])
        parent[find(a)] = n + i
        parent[find(b)] = n + i
    roots = np.array([find(i) for i in range(n)])
    number: dict[int, int] = {}
    for leaf in _leaf_order(linked):
        number.setdefault(int(roots[leaf]), len(number))
    return np.array([number[int(r)] for r in roots])


def estimate_k(linked: np.ndarray, y_true: np.ndarray, mask_old: np.ndarray, k_old: int,
               patience: int = 50, k_max: int | None = None) -> dict:
    """Official K search (spec 2.6.4): cuts to K_old+1, K_old+2, ... clusters; Old accuracy (v2, one
    Hungarian over all points, read on old-class points); stop after `patience` cuts without a strict
    improvement. Returns K_est, the best Old accuracy and the curve [(K, old_acc)]."""
    n = len(linked) + 1
    k_max = min(n, k_max or n)
    best, best_k, since, curve = -1.0, k_old + 1, 0, []
    for k in range(k_old + 1, k_max + 1):
        _, old, _ = split_cluster_acc_v2(y_true, cut_to_k(linked, k), mask_old)
        curve.append((k, old))
        if old > best:
            best, best_k, since = old, k, 0
        else:
            since += 1
            if since >= patience:
                break
    return {"k_est": int(best_k), "score": float(best), "curve": curve}


def iterative_mean_shift_clustering(v: np.ndarray, y: np.ndarray, labelled: np.ndarray, mask_old: np.ndarray,
                                    ks: dict[str, int], *, k: int = 8, alpha: float = 0.5, max_iter: int = 20,
                                    patience: int = 2, linkage_backend: str = "auto",
                                    max_exact_n: int = 20000) -> dict:
    """IMS (spec 2.7): t = 0 uses v as is; each later t shifts every row towards its kNN mean (itself
    dropped); Ward + cut to each K in `ks`; the iteration with the best labelled-subset accuracy (ties:
    later wins) is kept per K variant; a variant stops after `patience` non-improving iterations.
    Returns per variant: all/old/new on the UNLABELLED points at the kept iteration, that iteration, and
    the per-iteration trace (accuracies at every t)."""
    cur = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    unl = ~labelled
    state = {name: {"best": -1.0, "bad": 0, "active": True, "pick": None, "trace": []} for name in ks}
    t = 0
    while t <= max_iter and any(s["active"] for s in state.values()):
        if t > 0:
            cur = iterate_mean_shift(cur, k, alpha)
        linked = ward_linkage(cur.numpy(), backend=linkage_backend, max_exact_n=max_exact_n)
        for name, kk in ks.items():
            s = state[name]
            if not s["active"]:
                continue
            pred = cut_to_k(linked, kk)
            lab = hungarian_acc(y[labelled], pred[labelled])
            a, o, nw = split_cluster_acc_v2(y[unl], pred[unl], mask_old[unl])
            rec = {"t": t, "lab_acc": lab, "all": a, "old": o, "new": nw}
            s["trace"].append(rec)
            if lab >= s["best"]:
                s["bad"] = 0 if lab > s["best"] else s["bad"] + 1
                s["best"], s["pick"] = lab, {**rec, "pred": pred}
            else:
                s["bad"] += 1
            if s["bad"] >= patience:
                s["active"] = False
        t += 1
    return {name: {"all": s["pick"]["all"], "old": s["pick"]["old"], "new": s["pick"]["new"],
                   "t": s["pick"]["t"], "pred": s["pick"]["pred"], "trace": s["trace"],
                   "iterations": len(s["trace"])} for name, s in state.items()}


# ---------------------------------------------------------------------------------------- k-means
def semi_supervised_kmeans(x: np.ndarray, labelled: np.ndarray, y_lab: np.ndarray, k: int, *, seed: int = 0,
                           max_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """GCD's semi-supervised k-means: labelled points are forced to their class; the first |old| centroids
    start at the labelled class means, the remaining K-|old| by k-means++ on the unlabelled points; then
    Lloyd iterations in which only unlabelled points are re-assigned. Returns labels for every point
    (labelled classes keep their ids 0..|old|-1)."""
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    classes = np.unique(y_lab)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError("labelled classes must be 0..|old|-1")
    cents = [x[labelled][y_lab == c].mean(0) for c in classes]
    xu = x[~labelled]
    d2 = np.min(((xu[:, None, :] - np.array(cents)[None]) ** 2).sum(-1), axis=1)
    while len(cents) < k:
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(xu), 1 / len(xu))
        c = xu[rng.choice(len(xu), p=p)]
        cents.append(c)
        d2 = np.minimum(d2, ((xu - c) ** 2).sum(1))
    cents = np.array(cents)
    assign = np.empty(len(x), int)
    assign[labelled] = y_lab
    for _ in range(max_iter):
        dist = (xu ** 2).sum(1)[:, None] - 2 * xu @ cents.T + (cents ** 2).sum(1)[None]
        assign[~labelled] = dist.argmin(1)
        new = np.array([x[assign == j].mean(0) if (assign == j).any() else cents[j] for j in range(k)])
        shift = float(((new - cents) ** 2).sum())
        cents = new
        if shift < tol:
            break
    return assign


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(np.asarray(x, np.float64))


def knn_purity(x: np.ndarray, y: np.ndarray, k: int = 8) -> float:
    """Fraction of each point's k nearest neighbours (itself excluded) sharing its label (claim C3)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    idx = knn_indices(t, t, k, drop_top1=True).numpy()
    return float((y[idx] == y[:, None]).mean())
