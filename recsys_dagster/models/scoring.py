"""Vectorized top-n selection shared by every model's recommend and similar-items paths."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

#: Cells of a dense score batch (rows x items) scored at once: about 160 MB of float64, so a
#: large catalog gets smaller user batches instead of exhausting memory.
BATCH_CELLS = 20_000_000


def batch_size(n_items: int) -> int:
    return max(1, BATCH_CELLS // max(1, n_items))


def mask_cells(scores: np.ndarray, mask: csr_matrix) -> np.ndarray:
    """``scores`` with every cell stored in the boolean ``mask`` (same shape) set to -inf."""
    rows, cols = mask.nonzero()
    scores[rows, cols] = -np.inf
    return scores


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``n`` finite scores of every row, best first: (row, column, score) arrays.

    -inf marks a cell that must not be returned (excluded, or no evidence), so a row can yield
    fewer than ``n`` entries. ``argpartition`` keeps this O(items) per row instead of a full sort.
    Rows come out grouped and in order, each row's entries by rank.
    """
    n_rows, n_cols = scores.shape
    k = min(n, n_cols)
    if k <= 0 or n_rows == 0:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=np.float64)
    if k < n_cols:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.tile(np.arange(n_cols), (n_rows, 1))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)  # ties: lower column first
    columns = np.take_along_axis(candidates, order, axis=1)
    best = np.take_along_axis(candidate_scores, order, axis=1)
    rows = np.repeat(np.arange(n_rows), k).reshape(n_rows, k)
    keep = np.isfinite(best)
    return rows[keep], columns[keep], best[keep].astype(np.float64)


def ranks_within_rows(rows: np.ndarray) -> np.ndarray:
    """1-based position of every entry inside its run of equal ``rows`` (rows grouped, in order)."""
    if len(rows) == 0:
        return np.array([], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    run_lengths = np.diff(np.r_[starts, len(rows)])
    return np.arange(len(rows)) - np.repeat(starts, run_lengths) + 1
