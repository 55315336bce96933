"""Small statistics the studies' summaries share."""

from typing import Iterable, Optional, Tuple


def mean_std(values: Iterable[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """The mean and sample standard deviation (n - 1) of the values that are not None, unrounded;
    (None, None) with none, and std None with one."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, std
