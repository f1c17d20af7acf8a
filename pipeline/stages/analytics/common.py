"""Pieces shared by zones, lines and alert rules: class-name and score filters."""
from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError
from pipeline.types import class_ids


def class_ids_for(names: list[str] | None, class_names: list[str], where: str) -> np.ndarray | None:
    """Class ids (K,) int32 for the class `names` of a zone/line/rule (every id of a name several share), or None
    when it takes every class.

    Raises ConfigError naming `where` (e.g. "zone 'door'") and the known names when a name is unknown.
    """
    if names is None:
        return None
    ids, unknown = class_ids(names, class_names)
    if unknown:
        known = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
        raise ConfigError(f"{where}: unknown class {unknown}; the detector's classes are: {known}")
    return ids


def row_filter(class_id: np.ndarray, score: np.ndarray, allowed: np.ndarray | None, min_score: float) -> np.ndarray:
    """(N,) bool: rows of an allowed class whose score reaches `min_score`."""
    keep = np.asarray(score) >= min_score
    if allowed is not None:
        keep &= np.isin(class_id, allowed)
    return keep

