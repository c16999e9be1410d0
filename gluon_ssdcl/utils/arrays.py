"""Array and number helpers shared by the evaluations: NumPy views, JSON-safe numbers."""
import math
from typing import Iterable, Optional

import numpy as np

__all__ = ['as_numpy', 'finite_or_none', 'mean_or_none']


def as_numpy(array) -> np.ndarray:
    """A NumPy view of an NDArray (copied to the host) or of any array-like."""
    return array.asnumpy() if hasattr(array, 'asnumpy') else np.asarray(array)


def finite_or_none(value: float) -> Optional[float]:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def mean_or_none(values: Iterable[Optional[float]]) -> Optional[float]:
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
