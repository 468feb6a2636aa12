"""Config sections for a graph at scale: how the ledger stores activations, and rebuilding
on a Ray cluster. Part of `config.Config` ([ledger], [distributed]); checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ActivationDtype = Literal["float32", "float16", "bfloat16"]
RebuildEngine = Literal["local", "ray"]


@dataclass
class LedgerConfig:
    activation_dtype: ActivationDtype = "float32"
    """How stored activations are kept (16-bit halves the ledger); changing it needs a rebuild."""


@dataclass
class DistributedConfig:
    engine: RebuildEngine = "local"
    """`rebuild` runs the model in this process (local) or on Ray workers (ray)."""
    address: str = ""
    """Ray cluster to join: `auto`, `ray://host:10001` or `host:6379`; empty: start a local one."""
    workers: int = field(default=0, metadata={"min": 0})
    """Ray workers; 0: one per GPU (by gpus_per_worker), or one per CPU without GPUs."""
    gpus_per_worker: float = field(default=1.0, metadata={"min": 0.0})
    """GPUs each worker reserves (0.5: two share one); none on a cluster without GPUs."""
    chunk_nodes: int = field(default=128, metadata={"min": 1})
    """Nodes per worker task, and per ledger transaction on the driver."""
