"""Benchmark: peak memory and time of CMS's Ward agglomerative step, the naive exact call
(`scipy.cluster.hierarchy.linkage(X, method="ward")`, which holds the N(N-1)/2 condensed distance
matrix) against the memory-bounded kNN-graph-constrained Ward (`cms.cluster.ward_linkage(...,
backend="knn_graph")`: chunked kNN + scikit-learn's `ward_tree` with a sparse connectivity, O(N k)),
at growing N, each measurement in a fresh process (peak resident memory above the process's baseline).
It also reports how well the two agree (Hungarian agreement of the cuts at K clusters).

    python benchmarks/cms_agglomerative_memory.py [--sizes 2000 4000 8000 12000] [--dim 64] [--k 15]

At ImageNet-100 scale (N ~ 127k transductive IMS) the exact call would need N(N-1)/2 x 8 bytes ~ 65 GB for
the distance matrix alone; the table's last row extrapolates both methods there.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time


def _data(n: int, dim: int, n_clusters: int = 100, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _measure(method: str, n: int, dim: int, k: int, out: mp.Queue) -> None:
    import numpy as np  # noqa: F401
    import torch

    from cvpr24.pipelines.cms import cluster as C

    torch.set_num_threads(2)
    x = _data(n, dim)
    # warm up imports and allocators on a tiny input so they count in the baseline
    C.ward_linkage(x[:50], backend=method, graph_k=5)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    linked = C.ward_linkage(x, backend=method, graph_k=k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put({"method": method, "n": n, "peak_mb": (peak - base) / 1024, "seconds": seconds,
             "labels": C.cut_to_k(linked, 100).tolist()})


def run(method: str, n: int, dim: int, k: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(method, n, dim, k, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000, 12000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import numpy as np

    from cvpr24.pipelines.cms.cluster import hungarian_acc

    rows = []
    for n in args.sizes:
        exact = run("scipy", n, args.dim, args.k)
        graph = run("knn_graph", n, args.dim, args.k)
        agree = hungarian_acc(np.array(exact["labels"]), np.array(graph["labels"]))
        rows.append({"n": n, "exact_peak_mb": exact["peak_mb"], "exact_s": exact["seconds"],
                     "graph_peak_mb": graph["peak_mb"], "graph_s": graph["seconds"],
                     "condensed_matrix_mb": n * (n - 1) / 2 * 8 / 2**20, "agreement_at_100": agree})
    n_big = 127_000
    last, first = rows[-1], rows[0]
    # measured growth exponent of each method's peak between the smallest and largest N
    growth = {m: float(np.log(max(last[f"{m}_peak_mb"], 1e-3) / max(first[f"{m}_peak_mb"], 1e-3))
                       / np.log(last["n"] / first["n"])) for m in ("exact", "graph")}
    extrap = {"n": n_big, "exact_peak_mb": last["exact_peak_mb"] * (n_big / last["n"]) ** 2,
              "graph_peak_mb": last["graph_peak_mb"] * (n_big / last["n"]) ** max(growth["graph"], 1.0),
              "growth_exponent": growth,
              "condensed_matrix_mb": n_big * (n_big - 1) / 2 * 8 / 2**20}
    if args.json:
        print(json.dumps({"rows": rows, "extrapolated": extrap}, indent=2))
        return
    print("| N | exact Ward peak (MB) | exact s | kNN-graph Ward peak (MB) | kNN-graph s | N(N-1)/2 doubles (MB) "
          "| agreement of the 100-cluster cuts |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']} | {r['exact_peak_mb']:.0f} | {r['exact_s']:.1f} | {r['graph_peak_mb']:.0f} | "
              f"{r['graph_s']:.1f} | {r['condensed_matrix_mb']:.0f} | {r['agreement_at_100']:.3f} |")
    print(f"\nmeasured growth exponent of the peak (peak ~ N^e): exact {growth['exact']:.2f}, "
          f"kNN graph {growth['graph']:.2f}\n")
    print(f"| {n_big} (extrapolated: N^2 / N^max(e,1)) | {extrap['exact_peak_mb'] / 1024:.0f} GB | – | "
          f"{extrap['graph_peak_mb']:.0f} | – | {extrap['condensed_matrix_mb'] / 1024:.0f} GB | – |")


if __name__ == "__main__":
    main()
