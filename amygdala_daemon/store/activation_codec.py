"""How a node's pooled activations are stored in a ledger BLOB: float32, float16 or bfloat16.

The fold is float64 whatever the storage: a narrower dtype rounds each stored component once,
on the way in, and never again. Decoding always gives float32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# float16's largest finite value: larger components are stored saturated, not as inf.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def itemsize(dtype: str) -> int:
    """Bytes per stored component."""
    return 4 if dtype == "float32" else 2


def encode(activations: npt.NDArray[np.floating], dtype: str) -> bytes:
    """The BLOB for `[n_layers, hidden]` activations stored as `dtype`."""
    values = np.ascontiguousarray(activations, dtype=np.float32)
    if dtype == "float32":
        return values.tobytes()
    if dtype == "float16":
        return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16).tobytes()
    if dtype == "bfloat16":
        # Round to nearest, ties to even, on the upper 16 bits of the float32 pattern.
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16).tobytes()
    raise ValueError(f"unknown activation dtype {dtype!r}")


def decode(blob: bytes, n_layers: int, hidden: int, dtype: str) -> npt.NDArray[np.float32]:
    """float32 `[n_layers, hidden]` activations from a BLOB that `encode` wrote as `dtype`."""
    if dtype == "float32":
        return np.frombuffer(blob, dtype=np.float32).reshape(n_layers, hidden)
    if dtype == "float16":
        return np.frombuffer(blob, dtype=np.float16).astype(np.float32).reshape(n_layers, hidden)
    if dtype == "bfloat16":
        upper = np.frombuffer(blob, dtype=np.uint16).astype(np.uint32) << 16
        return upper.view(np.float32).reshape(n_layers, hidden)
    raise ValueError(f"unknown activation dtype {dtype!r}")
