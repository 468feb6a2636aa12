"""Fixed samples of stored activations, read from the ledger in the project's sample order."""

from __future__ import annotations

import numpy as np

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.covariance import ExactCovariance, SampledCovariance, Solver
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.labels import is_eligible
from amygdala_daemon.core.sampling import sample_key
from amygdala_daemon.core.vectors import needs_covariance
from amygdala_daemon.store.ledger import Ledger


def eligible_sample(ledger: Ledger, fold: Accumulators, size: int) -> np.ndarray:
    """Activations `[m, n_layers, hidden]` (float64) of the first `size` eligible live nodes.

    The order is `sample_key`: the same nodes for the same ledger, however it was built.
    """
    keyed = sorted(
        (sample_key(node_id), node_id)
        for node_id, tags, content in ledger.live_labels()
        if is_eligible(tags, content, fold.labels)
    )
    ids = [node_id for _, node_id in keyed[:size]]
    entries = sorted(ledger.sample_live_entries(ids), key=lambda e: sample_key(e.node_id))
    if not entries:
        return np.zeros((0, *fold.shape))
    return np.stack([entry.activations.astype(np.float64) for entry in entries])


def covariance_solver(fold: Accumulators, ledger: Ledger, config: Config) -> Solver | None:
    """What the configured method solves against: None when it needs no covariance.

    The fold's exact co-moment when it keeps one; above `vectors.covariance_max_hidden`, a
    covariance estimated from `vectors.covariance_sample` stored activations.
    """
    if not needs_covariance(config.vectors.method):
        return None
    rule = config.vectors.shrinkage
    if fold.comoment is not None:
        return ExactCovariance(fold.comoment, rule)
    samples = eligible_sample(ledger, fold, config.vectors.covariance_sample)
    return SampledCovariance(samples, fold.total.mean, rule)
