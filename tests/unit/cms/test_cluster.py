"""GCD accuracy protocol, Ward cut, K search, iterative mean shift, SSK, memory-bounded Ward."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from cvpr24.pipelines.cms import cluster as C


def _blobs(n_blobs, per, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dim)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centres])
    return x, np.repeat(np.arange(n_blobs), per)


def test_v2_accuracy_is_one_for_a_permuted_perfect_clustering():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([7, 7, 2, 2, 5, 5, 0, 0])
    assert C.split_cluster_acc_v2(y, pred, y < 2) == (1.0, 1.0, 1.0)


def test_v2_uses_one_global_assignment_and_differs_from_v1():
    # one cluster (0) holds old class 0 and new class 2; separate Hungarian runs (v1) give it to both
    y = np.array([0, 0, 0, 2, 2, 2, 1, 1])
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    mask_old = y < 2
    a2, o2, n2 = C.split_cluster_acc_v2(y, pred, mask_old)
    assert (a2, o2, n2) == (5 / 8, 1.0, 0.0)  # cluster 0 -> class 0 globally; class 2 unmatched
    a1, o1, n1 = C.split_cluster_acc_v1(y, pred, mask_old)
    assert (o1, n1) == (1.0, 1.0) and a1 == 1.0


def test_hungarian_accuracy_on_a_known_partial_labelling():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([1, 1, 0, 0, 0, 0])  # best map 1->0, 0->1: 5 of 6 right
    assert C.hungarian_acc(y, pred) == pytest.approx(5 / 6)


def test_ward_cut_gives_exactly_k_clusters_and_matches_fcluster():
    x, _ = _blobs(5, 12, spread=0.4)
    linked = linkage(x, method="ward")
    for k in (2, 5, 9):
        ours = C.cut_to_k(linked, k)
        ref = fcluster(linked, t=linked[:, 2][-k], criterion="distance")
        assert len(np.unique(ours)) == k
        assert C.hungarian_acc(ref, ours) == 1.0
        # the same numbering as the official fcluster call, not only the same partition
        np.testing.assert_array_equal(ours, ref - 1)
        np.testing.assert_array_equal(ours, fcluster(linked, t=k, criterion="maxclust") - 1)


def test_old_new_do_not_depend_on_cluster_numbering_when_the_assignment_is_tied():
    # 2 clusters for 4 classes: cluster a holds classes 0 (old) and 2 (new) equally, cluster b 1 and 3.
    # Matching a->0 or a->2 is equally good for All; which one is picked decides Old and New.
    y = np.array([0, 0, 2, 2, 1, 1, 3, 3])
    pred = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    mask_old = y < 2
    ref = C.split_cluster_acc_v2(y, pred, mask_old)
    for perm in ([5, 9], [9, 5], [1, 0], [3, 7]):
        assert C.split_cluster_acc_v2(y, np.asarray(perm)[pred], mask_old) == ref
    assert ref[0] == 0.5


def test_v2_old_new_divide_by_the_class_totals_of_the_gcd_definition():
    # a mask that is not "class is old": class 0 appears under both the mask and its complement
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    mask = np.array([True, True, False, False, True, True, False, False])
    a, o, n = C.split_cluster_acc_v2(y, pred, mask)
    # matching: cluster 0 -> class 0 (3), cluster 1 -> class 1 (2), cluster 2 -> class 2 (2)
    assert a == 7 / 8
    assert o == (3 + 2) / (4 + 2)   # classes {0, 1}: all 6 of their points, not the mask's 4
    assert n == (3 + 2) / (4 + 2)   # classes {0, 2}: all 6 of their points, not the complement's 4
    # with the "class is old" mask the two definitions agree
    a, o, n = C.split_cluster_acc_v2(y, pred, y < 1)
    assert (o, n) == (3 / 4, 4 / 4)


def test_canonical_labels_are_first_appearance_order():
    np.testing.assert_array_equal(C.canonical_labels(np.array([7, 7, 2, 9, 2, 7])), [0, 0, 1, 2, 1, 0])


def test_k_search_finds_seven_blobs_with_three_old():
    # the three old blobs are close together and the new ones far apart, so only the cut into 7 clusters
    # separates every old class (Old accuracy is blind to an old class merged with a new one)
    rng = np.random.default_rng(0)
    centres = np.array([0, 3, 6, 30, 60, 90, 120])[:, None] * np.eye(8)[0]
    x = np.concatenate([c + 0.3 * rng.normal(size=(15, 8)) for c in centres])
    y = np.repeat(np.arange(7), 15)
    linked = linkage(x, method="ward")
    out = C.estimate_k(linked, y, y < 3, k_old=3, patience=50)
    assert out["k_est"] == 7
    assert out["curve"][0][0] == 4  # the search starts at K_old + 1
    short = C.estimate_k(linked, y, y < 3, k_old=3, patience=5)
    assert len(short["curve"]) == (7 - 3) + 5  # stops after `patience` cuts without improvement


def test_ims_shrinks_blobs_and_stops_after_two_bad_iterations():
    import torch

    from cvpr24.pipelines.cms.model import iterate_mean_shift

    rng = np.random.default_rng(0)
    a = np.array([1.0, 0, 0]) + 0.15 * rng.normal(size=(40, 3))
    b = np.array([0, 1.0, 0]) + 0.15 * rng.normal(size=(40, 3))
    v = torch.nn.functional.normalize(torch.tensor(np.concatenate([a, b]), dtype=torch.float32), dim=-1)
    start = float(v[:40].var(0).sum() + v[40:].var(0).sum())
    cur = v
    for _ in range(20):
        cur = iterate_mean_shift(cur, k=20, alpha=0.5)
    assert float(cur[:40].var(0).sum() + cur[40:].var(0).sum()) < start / 10
    y = np.repeat([0, 1], 40)
    lab = np.zeros(80, bool)
    lab[:10] = True
    out = C.iterative_mean_shift_clustering(v.numpy(), y, lab, y < 1, {"gt": 2}, k=8, alpha=0.5, max_iter=20,
                                            patience=2)["gt"]
    # labelled accuracy is 1.0 from t=0 on: a tie is not an improvement (counter +1) but the later
    # iteration is kept (`<=`), so the variant stops at t=2 after two non-improving iterations
    assert out["iterations"] == 3 and out["t"] == 2 and out["all"] == 1.0


def test_memory_bounded_ward_gives_k_clusters_and_agrees_on_separated_blobs():
    x, y = _blobs(4, 30, spread=0.05)
    exact = C.cut_to_k(C.ward_linkage(x, backend="scipy"), 4)
    graph = C.cut_to_k(C.ward_linkage(x, backend="knn_graph", graph_k=6), 4)
    assert len(np.unique(graph)) == 4
    assert C.hungarian_acc(exact, graph) == 1.0 and C.hungarian_acc(y, graph) == 1.0
    # auto switches backend above the threshold
    auto = C.ward_linkage(x, backend="auto", max_exact_n=50, graph_k=6)
    assert auto.shape == (len(x) - 1, 4)


def test_semi_supervised_kmeans_keeps_labels_and_finds_new_blobs():
    x, y = _blobs(4, 20, spread=0.2, seed=3)
    lab = (y < 2) & (np.arange(len(y)) % 2 == 0)
    pred = C.semi_supervised_kmeans(x, lab, y[lab], 4, seed=0)
    assert np.array_equal(pred[lab], y[lab])
    assert C.hungarian_acc(y, pred) == 1.0


def test_knn_purity():
    x, y = _blobs(3, 10, spread=0.01)
    assert C.knn_purity(x, y, k=5) == 1.0
