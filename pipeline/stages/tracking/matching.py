"""Association helpers: pairwise IoU and minimum-cost assignment (LAPJV through `lap`)."""
from __future__ import annotations

import numpy as np

try:
    import lap
except ImportError:  # pragma: no cover - lap is a core dependency; scipy is the fallback
    lap = None

_NO_PAIRS = np.zeros((0, 2), np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a (N, 4)` with every box in `b (M, 4)`, both xyxy; returns (N, M) float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(ix2 - ix1, 0.0) * np.maximum(iy2 - iy1, 0.0)  # np.clip's wrapper costs more than the work
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def linear_assignment(cost: np.ndarray, max_cost: float) -> np.ndarray:
    """Minimum-total-cost one-to-one pairs whose cost is at most `max_cost`.

    cost: (N, M) float. Returns (K, 2) int64 rows of (row index, column index), sorted by row.
    Pairs that are each other's only feasible partner are taken directly (the usual case in tracking);
    only the ambiguous remainder goes to the LAPJV solver, which keeps a crowded frame cheap.
    """
    if cost.size == 0:
        return _NO_PAIRS
    feasible = cost <= max_cost
    row_options = feasible.sum(axis=1)
    col_options = feasible.sum(axis=0)
    col_of_row = feasible.argmax(axis=1)
    lone = (row_options == 1) & (col_options.take(col_of_row) == 1)
    rows = ((row_options > 0) & ~lone).nonzero()[0]  # feasible rows that are not lone
    if len(rows) == 0:
        lone_rows = lone.nonzero()[0]
        return index_pairs(lone_rows, col_of_row.take(lone_rows))
    open_cols = col_options > 0
    open_cols[col_of_row[lone]] = False
    cols = open_cols.nonzero()[0]
    sub = _solve(cost.take(rows, 0).take(cols, 1), max_cost)
    col_of_row[~lone] = -1
    col_of_row[rows.take(sub[:, 0])] = cols.take(sub[:, 1])
    matched = (col_of_row >= 0).nonzero()[0]
    return index_pairs(matched, col_of_row.take(matched))


def index_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(K, 2) int64 rows of (first[k], second[k]) from two (K,) index arrays (a quarter of np.column_stack's
    cost, which counts at a few thousand calls a second)."""
    return np.array([first, second], np.int64).T


def _solve(cost: np.ndarray, max_cost: float) -> np.ndarray:
    if lap is not None:
        _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=max_cost)
        rows = (x >= 0).nonzero()[0]
        pairs = index_pairs(rows, x[rows])
    else:  # pragma: no cover
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

        pairs = index_pairs(*linear_sum_assignment(cost))
    return pairs[cost[pairs[:, 0], pairs[:, 1]] <= max_cost]
