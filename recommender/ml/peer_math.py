"""The linear algebra behind the textbook peers (``recommender.ml.peers``): EASE's
closed-form weights and cosine top-k neighbour matrices over sparse binary rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

_KNN_CHUNK = 2_048  # rows of the co-occurrence product computed at a time


def ease_weights(x: sp.csr_matrix, l2: float, threads: int) -> np.ndarray:
    """float32 (m, m) EASE weights for the binary (n, m) matrix ``x``.

    Works in place on one float64 (m, m) array (plus the float32 result): at the
    default 4,000 items that is 128 + 64 MB.
    """
    m = x.shape[1]
    if m == 0:
        return np.zeros((0, 0), dtype=np.float32)
    gram = (x.T @ x).astype(np.float64).toarray()
    gram[np.diag_indices(m)] += l2
    with threadpool_limits(limits=threads, user_api="blas"):
        # Cholesky inverse: XᵀX + l2·I is symmetric positive definite for l2 > 0.
        factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True, clean=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE Gram matrix not positive (info {info})")
        precision, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE inversion failed (info {info})")
    del gram, factor
    # dpotri fills the upper triangle only; mirror it block by block.
    for start in range(0, m, 512):
        rows = slice(start, min(start + 512, m))
        precision[rows, :start] = precision[:start, rows].T
        diagonal_block = np.triu(precision[rows, rows])
        precision[rows, rows] = diagonal_block + np.triu(diagonal_block, 1).T
    precision /= -np.diag(precision).copy()  # B_ij = -P_ij / P_jj
    precision[np.diag_indices(m)] = 0.0
    # C order: scoring multiplies a sparse row into B, which walks B's rows.
    return np.ascontiguousarray(precision, dtype=np.float32)


def cosine_top_k(rows: sp.csr_matrix, k: int, shrinkage: float) -> sp.csr_matrix:
    """float32 (r, r) CSR: cosine similarity between the binary rows of ``rows``
    (r, c), ``co / (‖a‖·‖b‖ + shrinkage)``, self-similarity removed, keeping each
    row's ``k`` largest entries (ties by column)."""
    r = rows.shape[0]
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
    rows_t = rows.T.tocsr()
    pieces = []
    for start in range(0, r, _KNN_CHUNK):
        stop = min(start + _KNN_CHUNK, r)
        co = (rows[start:stop] @ rows_t).tocoo()
        row, col = co.row.astype(np.int64) + start, co.col.astype(np.int64)
        sim = co.data / (norms[row] * norms[col] + shrinkage)
        keep = (row != col) & (sim > 0)
        pieces.append(top_k_per_row(row[keep], col[keep], sim[keep], k))
    row, col, sim = (np.concatenate(parts) for parts in zip(*pieces, strict=True))
    return sp.csr_matrix((sim.astype(np.float32), (row, col)), shape=(r, r))


def top_k_per_row(
    row: np.ndarray, col: np.ndarray, value: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries (int64 [e], int64 [e], float64 [e]) that are among their row's
    ``k`` largest values (ties by smaller column)."""
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    new_row = np.r_[True, row[1:] != row[:-1]] if row.size else np.zeros(0, bool)
    starts = np.flatnonzero(new_row)
    rank = np.arange(row.shape[0]) - starts[np.cumsum(new_row) - 1]
    keep = rank < k
    return row[keep], col[keep], value[keep]
