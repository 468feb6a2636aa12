"""Welford running statistics in float64: add, remove, merge and subtract (Chan et al.).

Each accumulator holds a count and, per layer and dimension, a mean and M2 (sum of squared
deviations). Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass
class Welford:
    """Running count, mean and M2 of `[n_layers, hidden]` samples."""

    count: int
    mean: Array
    m2: Array

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> Welford:
        return cls(0, np.zeros(shape, np.float64), np.zeros(shape, np.float64))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def copy(self) -> Welford:
        return Welford(self.count, self.mean.copy(), self.m2.copy())

    def add(self, sample: npt.NDArray[np.floating]) -> None:
        x = np.asarray(sample, np.float64)
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def remove(self, sample: npt.NDArray[np.floating]) -> None:
        """Undo `add(sample)`. Removing the last sample resets to exactly zero."""
        if self.count <= 0:
            raise ValueError("cannot remove from an empty accumulator")
        x = np.asarray(sample, np.float64)
        if self.count == 1:
            self.count = 0
            self.mean[...] = 0.0
            self.m2[...] = 0.0
            return
        old_mean = self.mean.copy()
        self.count -= 1
        self.mean -= (x - self.mean) / self.count
        self.m2 -= (x - self.mean) * (x - old_mean)
        # Rounding can leave tiny negatives where the true M2 is zero.
        np.maximum(self.m2, 0.0, out=self.m2)

    def merge(self, other: Welford) -> None:
        """Fold `other` in: self becomes the statistics of the union."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * (other.count / total)
        self.m2 += other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    def subtract(self, part: Welford) -> Welford:
        """Statistics of `self` minus the subset `part` (Chan's formula run backwards)."""
        rest = self.count - part.count
        if rest < 0:
            raise ValueError(f"cannot subtract {part.count} samples from {self.count}")
        if rest == 0:
            return Welford.empty(self.shape)
        if part.count == 0:
            return self.copy()
        mean = (self.count * self.mean - part.count * part.mean) / rest
        delta = part.mean - mean
        m2 = self.m2 - part.m2 - delta**2 * (rest * part.count / self.count)
        return Welford(rest, mean, np.maximum(m2, 0.0))

    def variance(self, ddof: int = 1) -> Array:
        if self.count - ddof <= 0:
            return np.zeros(self.shape, np.float64)
        return self.m2 / (self.count - ddof)
