#!/usr/bin/env python3
"""Check the reference values of tests/data/reference with the released scib-metrics 0.5.1.

For each embedding of a reference case, recompute with scib-metrics the metrics that it computes
deterministically once it is given exact neighbour lists, and compare them with NAME.scib.json:

  isolated_labels, silhouette_label, clisi, silhouette_batch, ilisi, graph_connectivity,
  pcr_comparison (X_pca as X_pre)        -> must agree within --tolerance (default 1e-5);
  kbet_per_label                         -> printed only: scib-metrics 0.5.1 starts ARPACK from a
                                            random vector, and the reference values use the
                                            deterministic variant of docs/metrics.md §3.3;
  Leiden NMI/ARI                         -> not run (unseeded in 0.5.1; see docs/metrics.md §2.4).

Neighbours: exact Euclidean 90-NN from scikit-learn, each list starting with the cell itself
(ties broken by index as far as scikit-learn's brute-force search does), shared by all metrics as
scib-metrics' Benchmarker shares its 15/50/90 prefixes (docs/metrics.md §1.2).

Expects: Python 3.9-3.11, scib-metrics==0.5.1 (which brings jax, jaxlib, chex, umap-learn,
pynndescent, scanpy, anndata), scikit-learn, numpy. For example:
  python3 -m venv venv && venv/bin/pip install scib-metrics==0.5.1
  venv/bin/python crosscheck_scib_metrics.py tests/data/reference/kang_ctrl_stim.h5ad
Exit status 1 when a compared metric is outside the tolerance.
"""
import argparse
import json
import sys

import numpy as np


def neighbour_lists(x, k):
    from sklearn.neighbors import NearestNeighbors
    from scib_metrics.nearest_neighbors import NeighborsResults

    k = min(k, x.shape[0])
    distances, indices = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x).kneighbors(x)
    # Put the cell itself first even where a duplicate point came back before it.
    rows = np.arange(x.shape[0])
    for i in np.flatnonzero(indices[:, 0] != rows):
        where = np.flatnonzero(indices[i] == i)
        j = where[0] if where.size else k - 1
        indices[i, 1 : j + 1] = indices[i, :j].copy()
        distances[i, 1 : j + 1] = distances[i, :j].copy()
        indices[i, 0], distances[i, 0] = i, 0.0
    return NeighborsResults(indices=indices, distances=distances)


def prefix(nn, k):
    from scib_metrics.nearest_neighbors import NeighborsResults

    return NeighborsResults(indices=nn.indices[:, :k], distances=nn.distances[:, :k])


def scores(x, x_pre, labels, batches):
    import scib_metrics as sm

    nn90 = neighbour_lists(x, 90)
    return {
        "isolated_labels": sm.isolated_labels(x, labels, batches),
        "silhouette_label": sm.silhouette_label(x, labels),
        "clisi": sm.clisi_knn(nn90, labels),
        "silhouette_batch": sm.silhouette_batch(x, labels, batches),
        "ilisi": sm.ilisi_knn(nn90, batches),
        "graph_connectivity": sm.graph_connectivity(prefix(nn90, 15), labels),
        "pcr_comparison": sm.pcr_comparison(x_pre, x, batches, categorical=True),
        "kbet_per_label": sm.kbet_per_label(prefix(nn90, 50), batches, labels),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("h5ad", help="a reference case, e.g. tests/data/reference/kang_ctrl_stim.h5ad")
    parser.add_argument("--expected", help="its .scib.json (default: H5AD + '.scib.json')")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()

    import anndata

    adata = anndata.read_h5ad(args.h5ad)
    expected = json.load(open(args.expected or args.h5ad + ".scib.json"))["embeddings"]
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    batches = adata.obs["batch"].astype(str).to_numpy()
    x_pre = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
    failed = False
    for key, reference in expected.items():
        x = np.asarray(adata.obsm[key], dtype=np.float64)
        for metric, value in scores(x, x_pre, labels, batches).items():
            want = reference["metrics"][metric]
            diff = abs(float(value) - want)
            compared = metric != "kbet_per_label"
            bad = compared and not diff <= args.tolerance
            failed |= bad
            note = "FAIL" if bad else ("ok" if compared else "(not compared)")
            print(f"{key:16s} {metric:20s} scib-metrics {float(value):.8f}  reference {want:.8f}  {note}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
