"""Bringing a fold back from the state directory: checkpoint plus replay, or a full refold.

No model is needed for any of it: the ledger holds every pooled activation.
"""

from __future__ import annotations

from collections.abc import Iterable

from amygdala_daemon.core.changes import Change
from amygdala_daemon.core.config import Config, LabelsConfig
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.labels import is_eligible
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.vectors import tracks_covariance
from amygdala_daemon.store.checkpoint import load_checkpoint
from amygdala_daemon.store.ledger import Ledger


def fold_changes(fold: Accumulators, changes: Iterable[Change], ledger: Ledger) -> None:
    """Apply ledger changes to `fold`, seeding each concept it meets for the first time.

    A new concept's exclusions start from the entries live at the change that introduces it,
    read from the ledger: that is what makes a later retraction exact.
    """
    for change in changes:
        for name in fold.unseen_concepts(change.entry):
            fold.add_concept(name, ledger.entries_live_at(change.seq, name))
        fold.apply(change)


def refold(
    ledger: Ledger, shape: tuple[int, int], labels: LabelsConfig, covariance: bool = False
) -> Accumulators:
    """The fold of every live entry in the ledger, under `labels`. No model needed.

    `covariance` also keeps the full co-moment per layer (see `vectors.tracks_covariance`).
    """
    concepts: set[str] = set()
    for _, tags, content in ledger.live_labels():
        if is_eligible(tags, content, labels):
            concepts.update(tags)
    return Accumulators.from_entries(
        ledger.live_entries(), concepts, shape, labels, ledger.seq, covariance=covariance
    )


def recover_fold(ledger: Ledger, config: Config, shape: tuple[int, int]) -> Accumulators:
    """Checkpoint plus replay of newer ledger rows; a full refold if the checkpoint is unusable.

    Unusable: made under other settings, ahead of the ledger, or made of another ledger (one
    since deleted or reset, whose sequence numbers meant other changes).
    """
    labels = config.labels
    covariance = tracks_covariance(config.vectors, shape[1])
    checkpoint = StatePaths(config.state_path).checkpoint
    fold = load_checkpoint(checkpoint, labels, shape, covariance, ledger_id=ledger.ledger_id)
    if fold is None or fold.ledger_seq > ledger.seq:
        return refold(ledger, shape, labels, covariance)
    fold_changes(fold, ledger.changes_since(fold.ledger_seq), ledger)
    fold.ledger_seq = ledger.seq
    return fold


def stored_model_info(ledger: Ledger) -> ModelInfo | None:
    """The model the ledger's activations came from; None before the first entry."""
    text = ledger.get_meta("model")
    return None if text is None else ModelInfo.from_json(text)
