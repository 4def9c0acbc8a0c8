"""Comparisons the export tests share."""
import numpy as np


def max_state_diff(a: list, b: list) -> float:
    """Largest |difference| between two per-layer states (lists of tuples of arrays)."""
    return max(float(np.abs(x - y).max()) for la, lb in zip(a, b) for x, y in zip(la, lb))
