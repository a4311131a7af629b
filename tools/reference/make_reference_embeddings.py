#!/usr/bin/env python3
"""Build the two embeddings of an evaluator reference case (see docs/reference-values.md).

Input: a data set in the project's .h5ad convention (raw counts in X, obs['batch'],
obs['cell_type'], and var['modality'] in {RNA, ADT} for multimodal data). Output: a copy with

  obsm['X_pca']            principal component scores (50 by default) of the RNA features after
                           normalize_total(1e4) and log1p, centred, exact SVD;
  obsm['X_batchcentered']  X_pca minus the mean row of each cell's batch.

This is how tests/data/reference/*.h5ad were made. The arrays agree with those files up to the
sign of each component and rounding; no metric depends on the signs. For multimodal data only
the RNA features are used, and the library size is the cell's RNA total. The bundled cases have
at most 2000 RNA features, so no feature selection took place; with more features this script
keeps the 2000 most variable ones by scanpy's Seurat-flavour selection (scanpy needed then).

Expects Python >= 3.9 with numpy, scipy and anndata (0.8 or later). It is documentation of the
procedure first: no test runs it, and it uses only long-stable calls of those packages.

  python3 make_reference_embeddings.py SOURCE.h5ad OUT.h5ad [--n-components 50]
"""
import argparse

import numpy as np
import scipy.sparse as sp


def lognormalised(counts, target_sum):
    """normalize_total(target_sum) then log1p, as a CSR float64 matrix (all-zero cells stay 0)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    factors = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x = sp.diags(factors) @ x
    x = sp.csr_matrix(x)
    x.data = np.log1p(x.data)
    return x


def top_variable(x, n_top):
    """Column indices of the n_top most variable features (scanpy, Seurat flavour)."""
    import anndata
    import scanpy as sc

    tmp = anndata.AnnData(x.copy())
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def pca_scores(x, n_components):
    """Scores of the leading components of the centred matrix by a full SVD (float64).

    Each component is signed so that its largest-magnitude loading is positive, which makes the
    output reproducible; the reference files may carry other signs.
    """
    dense = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    centred = dense - dense.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, len(s))
    pivots = np.abs(vt[:k]).argmax(axis=1)
    signs = np.sign(vt[np.arange(k), pivots])
    signs[signs == 0] = 1.0
    return u[:, :k] * s[:k] * signs


def batch_centred(scores, batches):
    out = scores.copy()
    for b in np.unique(batches):
        rows = batches == b
        out[rows] -= scores[rows].mean(axis=0, keepdims=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--n-components", type=int, default=50)
    parser.add_argument("--n-top-genes", type=int, default=2000)
    parser.add_argument("--target-sum", type=float, default=1e4)
    parser.add_argument("--batch-key", default="batch")
    args = parser.parse_args()

    import anndata

    adata = anndata.read_h5ad(args.source)
    rna = np.ones(adata.n_vars, dtype=bool)
    if "modality" in adata.var:
        rna = adata.var["modality"].astype(str).to_numpy() == "RNA"
    x = lognormalised(adata.X[:, np.flatnonzero(rna)], args.target_sum)
    if x.shape[1] > args.n_top_genes:
        x = x[:, top_variable(x, args.n_top_genes)]
    scores = pca_scores(x, args.n_components)
    adata.obsm["X_pca"] = scores
    adata.obsm["X_batchcentered"] = batch_centred(scores, adata.obs[args.batch_key].astype(str).to_numpy())
    adata.write_h5ad(args.out, compression="gzip")


if __name__ == "__main__":
    main()
