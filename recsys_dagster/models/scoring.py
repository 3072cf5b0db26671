"""Vectorized top-n selection shared by every model's recommend and similar-items paths.

Two paths: ``top_n`` over a dense batch of scores (any model), and ``factor_top_n`` for models that
rank by a dot product of factors, which hands whole user batches to implicit's multi-threaded
top-k (BLAS matmul in float32, exclusions applied inside, a heap per row): no dense float64 copy,
no negated copy, no separate masking pass.
"""

from __future__ import annotations

import os

import numpy as np
from dataclasses import dataclass

from implicit.cpu.topk import topk
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

#: Cells of a dense score batch (rows x items) scored at once: about 160 MB of float64, so a
#: large catalog gets smaller user batches instead of exhausting memory.
BATCH_CELLS = 20_000_000
#: Users per call of implicit's top-k: big enough to keep the matmul BLAS-bound, while its own
#: internal batches bound the memory.
FACTOR_BATCH_USERS = 65_536
THREADS = os.cpu_count() or 1
#: Below this share of finite cells a dense batch is ranked by sorting its finite cells.
SPARSE_SHARE = 0.05
#: Items (largest factor norm first) that ``pruned_factor_top_n`` scores for every user. At
#: RetailRocket size a user's exact top-40 needs the first ~5,500 of 98,657 (measured, README "Performance").
HEAD_ITEMS = 8192
#: Users whose head scores are held at once (4,096 x 8,192 float32 = 128 MiB).
HEAD_CHUNK_USERS = 4096
#: Relative slack on the Cauchy-Schwarz bound: covers float rounding of the dot products.
BOUND_SLACK = 1e-3


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
    fewer than ``n`` entries. ``argpartition`` keeps this O(items) per row instead of a full sort;
    a batch that is mostly -inf (neighbourhood models: only co-occurring items have a score) sorts
    just its finite cells instead, as ``argpartition`` is slowest on runs of equal values.
    Rows come out grouped and in order, each row's entries by rank.
    """
    n_rows, n_cols = scores.shape
    k = min(n, n_cols)
    if k <= 0 or n_rows == 0:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=np.float64)
    finite = np.isfinite(scores)
    if np.count_nonzero(finite) < SPARSE_SHARE * finite.size:
        return best_cells(scores, *np.nonzero(finite), n)
    if k < n_cols:
        candidates = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k :]
        settle_boundary_ties(scores, candidates)
    else:
        candidates = np.tile(np.arange(n_cols), (n_rows, 1))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)  # ties: lower column first
    columns = np.take_along_axis(candidates, order, axis=1)
    best = np.take_along_axis(candidate_scores, order, axis=1)
    rows = np.repeat(np.arange(n_rows), k).reshape(n_rows, k)
    keep = np.isfinite(best)
    return rows[keep], columns[keep], best[keep].astype(np.float64)


def settle_boundary_ties(scores: np.ndarray, candidates: np.ndarray) -> None:
    """Make ``argpartition``'s pick deterministic: where a row's k-th best value is tied with cells
    left out, take the lowest columns among the tied (as ``best_cells`` does), in place."""
    k = candidates.shape[1]
    threshold = np.take_along_axis(scores, candidates, axis=1).min(axis=1)
    tied = np.count_nonzero(scores == threshold[:, None], axis=1)
    picked = np.count_nonzero(np.take_along_axis(scores, candidates, axis=1) == threshold[:, None], axis=1)
    for row in np.flatnonzero((tied > picked) & np.isfinite(threshold)):
        candidates[row] = np.lexsort((np.arange(scores.shape[1]), -scores[row]))[:k]


def best_cells(
    scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``top_n`` among the given (row, column) cells only (same contract); -inf cells are dropped."""
    return ranked_cells(rows, cols, scores[rows, cols], n)


def ranked_cells(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best ``n`` finite of (row, column, value) cells per row, as ``top_n`` returns them."""
    finite = np.isfinite(values)
    rows, cols, values = rows[finite], cols[finite], values[finite]
    order = np.lexsort((cols, -values, rows))  # by row, best first, ties: lower column first
    rows, cols, values = rows[order], cols[order], values[order]
    keep = ranks_within_rows(rows) <= n
    return rows[keep], cols[keep], values[keep].astype(np.float64)


def top_n_of_cells(scores: np.ndarray, cells: csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``top_n`` restricted to the stored ``cells`` of each row: when rows have a few dozen
    candidates among thousands of columns, only those are sorted."""
    return best_cells(scores, *cells.nonzero(), n)


def factor_top_n(
    user_vectors: np.ndarray, item_vectors: np.ndarray, n: int, exclude: csr_matrix | None, banned: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``top_n`` of ``user_vectors @ item_vectors.T`` without materializing it: (row, column, score).

    ``exclude`` (users x items, boolean) holds each row's forbidden columns, ``banned`` columns
    forbidden to every row. Same contract as ``top_n``: rows grouped in order, best first.
    float64 vectors are scored in float64; implicit gives filtered cells its dtype's lowest value.
    """
    k = min(n, len(item_vectors))
    if k <= 0 or len(user_vectors) == 0:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=np.float64)
    dtype = np.float64 if np.float64 in (user_vectors.dtype, item_vectors.dtype) else np.float32
    # implicit splits the users over THREADS itself; a multi-threaded BLAS under each of them
    # oversubscribes the cores (measured: 3.4 s -> 0.9 s for 15k users x 12k items here).
    with threadpool_limits(limits=1, user_api="blas"):
        ids, scores = topk(
            np.ascontiguousarray(item_vectors, dtype=dtype),
            np.ascontiguousarray(user_vectors, dtype=dtype),
            k,
            filter_query_items=exclude.astype(np.float32) if exclude is not None and exclude.nnz else None,
            filter_items=banned.astype(np.int32) if len(banned) else None,
            num_threads=THREADS,
        )
    keep = scores > np.finfo(dtype).min
    rows = np.repeat(np.arange(len(user_vectors)), k).reshape(-1, k)
    return rows[keep], ids[keep].astype(np.int64), scores[keep].astype(np.float64)


def ranks_within_rows(rows: np.ndarray) -> np.ndarray:
    """1-based position of every entry inside its run of equal ``rows`` (rows grouped, in order)."""
    if len(rows) == 0:
        return np.array([], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    run_lengths = np.diff(np.r_[starts, len(rows)])
    return np.arange(len(rows)) - np.repeat(starts, run_lengths) + 1


@dataclass(frozen=True)
class NormHead:
    """Item vectors ordered by norm: ``order`` = item positions, largest norm first; ``items`` =
    the first ``HEAD_ITEMS`` of them; ``bound`` = the largest norm outside them (0 if none)."""

    order: np.ndarray
    items: np.ndarray
    bound: float

    @classmethod
    def of(cls, item_vectors: np.ndarray, depth: int = HEAD_ITEMS) -> NormHead:
        norms = np.linalg.norm(item_vectors, axis=1)
        order = np.argsort(-norms, kind="stable")
        depth = min(depth, len(order))
        return cls(order=order, items=order[:depth], bound=float(norms[order[depth]]) if depth < len(order) else 0.0)


def regrouped(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) parts whose rows interleave, as one set grouped by row (each row's order kept)."""
    rows, cols, best = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order], best[order]


def pruned_factor_top_n(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    head: NormHead,
    n: int,
    exclude: csr_matrix | None,
    banned: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``factor_top_n``'s answer, exactly, from the ``head`` items for most users.

    An item outside the head scores at most ``|user| * head.bound`` (Cauchy-Schwarz). A user whose
    n-th best allowed head score beats that (with ``BOUND_SLACK``) has its whole top-n in the head;
    ALS gives popular items the large norms, so at RetailRocket size that holds for every user and
    the product shrinks ~12x. The others get the full ``factor_top_n``.
    """
    k = min(n, len(item_vectors))
    if k <= 0 or len(user_vectors) == 0 or head.bound == 0.0:
        return factor_top_n(user_vectors, item_vectors, n, exclude, banned)
    head_exclude = exclude[:, head.items] if exclude is not None else None
    rows, cols, best = factor_top_n(
        user_vectors, item_vectors[head.items], k, head_exclude, np.flatnonzero(np.isin(head.items, banned))
    )
    kth = np.full(len(user_vectors), -np.inf)
    last = ranks_within_rows(rows) == k
    kth[rows[last]] = best[last]
    settled = kth > np.linalg.norm(user_vectors, axis=1) * head.bound * (1 + BOUND_SLACK)
    keep = settled[rows]
    parts = [(rows[keep], head.items[cols[keep]], best[keep])]
    unsettled = np.flatnonzero(~settled)
    if len(unsettled):
        rest = factor_top_n(
            user_vectors[unsettled], item_vectors, n, exclude[unsettled] if exclude is not None else None, banned
        )
        parts.append((unsettled[rest[0]], rest[1], rest[2]))
    return regrouped(parts)


def best_outside_head(found: np.ndarray, unsettled: np.ndarray, vectors: np.ndarray, item_vectors: np.ndarray) -> None:
    """``found[unsettled]`` = the top item of ``vectors[unsettled]`` over every item (full search), in place."""
    if len(unsettled):
        rows, cols, _ = factor_top_n(vectors[unsettled], item_vectors, 1, None, np.array([], dtype=np.int64))
        found[unsettled[rows]] = cols


def pruned_factor_extremes(
    user_vectors: np.ndarray, item_vectors: np.ndarray, head: NormHead
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's lowest- and highest-scoring item column over every item (no exclusions, no bans:
    the two fix a full-row min-max scale), exactly, from one product with the ``head`` items for
    most users: an item outside the head scores within ``+-|user| * head.bound``."""
    lowest = np.zeros(len(user_vectors), dtype=np.int64)
    highest = np.zeros(len(user_vectors), dtype=np.int64)
    if len(user_vectors) == 0 or len(item_vectors) == 0:
        return lowest, highest
    dtype = np.float64 if np.float64 in (user_vectors.dtype, item_vectors.dtype) else np.float32
    head_vectors = np.ascontiguousarray(item_vectors[head.items], dtype=dtype)
    for start in range(0, len(user_vectors), HEAD_CHUNK_USERS):
        vectors = np.asarray(user_vectors[start : start + HEAD_CHUNK_USERS], dtype=dtype)
        scores = vectors @ head_vectors.T
        limit = np.linalg.norm(vectors, axis=1) * head.bound * (1 + BOUND_SLACK)
        low, high = scores.argmin(axis=1), scores.argmax(axis=1)
        chunk, picked = slice(start, start + len(vectors)), np.arange(len(vectors))
        lowest[chunk], highest[chunk] = head.items[low], head.items[high]
        best_outside_head(lowest[chunk], np.flatnonzero(scores[picked, low] >= -limit), -vectors, item_vectors)
        best_outside_head(highest[chunk], np.flatnonzero(scores[picked, high] <= limit), vectors, item_vectors)
    return lowest, highest
