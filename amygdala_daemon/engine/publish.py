"""Publishing a generation: decide, register the rows, measure, build, write; in that order.

The rows are registered in the ledger before the generation that uses them is written. A crash
between the two leaves the registry ahead of `current`, which is harmless: the registry is
append-only and the next publish uses every registered row. So nothing needs repairing later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

from amygdala_daemon.core.concepts import select_concepts
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.evaluation import evaluate, evaluation_due
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import Manifest, ModelInfo, Quality
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.quality import quality_summary
from amygdala_daemon.core.release import (
    Draft,
    Sampled,
    carried_over,
    draft_release,
    finish_release,
    settings_fingerprint,
    stale_concepts,
)
from amygdala_daemon.store.generations import (
    current_vectors,
    generations,
    newest_manifest,
    write_generation,
)
from amygdala_daemon.store.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publisher:
    """Writes generations for one ledger and fold into `<state_dir>/published/`."""

    ledger: Ledger
    config: Config
    model: ModelInfo

    @property
    def published(self) -> Path:
        return StatePaths(self.config.state_path).published

    def unchanged(self, fold: Accumulators, newest: Manifest | None) -> bool:
        """Nothing moved since the newest generation: neither the ledger nor the settings.

        The newest generation, not `current`: after a rollback, nothing is republished until
        the ledger or the settings move.
        """
        return (
            newest is not None
            and newest.get("ledger_seq") == fold.ledger_seq
            and newest.get("settings_fingerprint") == settings_fingerprint(self.config, self.model)
        )

    def publish(self, fold: Accumulators, now: datetime, force: bool = False) -> Path | None:
        """Write a new generation; None when nothing changed since the newest one."""
        newest = newest_manifest(self.published)
        if not force and self.unchanged(fold, newest):
            return None
        counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
        selection = select_concepts(counts, self.ledger.registry(), self.config.concepts)
        self.ledger.register(selection.rows)
        stale = stale_concepts(fold, selection.rows)
        generation = max(generations(self.published), default=0) + 1
        log.info("publishing generation %d (ledger seq %d)", generation, fold.ledger_seq)
        draft = draft_release(
            fold,
            selection,
            self.config,
            self.model,
            generation=generation,
            created_at=now.isoformat(timespec="seconds"),
            registry_epoch=self.ledger.get_meta("registry_epoch") or "0",
            # A published concept keeps its row; with no data left, it keeps its last vector.
            previous_vectors=current_vectors(self.published) if stale else {},
        )
        sampled = self._sampled(draft, fold, newest, now, force)
        publish = self.config.publish
        written = write_generation(
            finish_release(draft, fold, sampled),
            self.published,
            self.config.vectors.dtype,
            publish.keep,
            publish.vectors_path,
            publish.manifest_path,
        )
        log.info("published %s", written)
        return written

    def _sampled(
        self,
        draft: Draft,
        fold: Accumulators,
        newest: Manifest | None,
        now: datetime,
        force: bool,
    ) -> Sampled:
        """Spreads and held-out quality: measured again when due, else the newest's."""
        settings = self.config.vectors
        reason = (
            "forced"
            if force
            else evaluation_due(newest, draft.manifest, fold.total.count, settings, now)
        )
        if reason is None and newest is not None:
            return carried_over(newest, draft.rows, draft.manifest["layers"])
        measured = evaluate(
            fold,
            self.ledger,
            draft.rows,
            settings.method,
            settings.evaluation_sample,
            draft.stacked_units(),
        )
        quality = quality_summary(measured.scores, draft.rows, draft.manifest["layers"])
        return Sampled(
            pos_std=measured.pos_std.tolist(),
            neg_std=measured.neg_std.tolist(),
            quality=cast(Quality, quality),
            evaluation={
                "ledger_seq": fold.ledger_seq,
                "at": draft.manifest["created_at"],
                "reason": reason,
                "sampled_nodes": measured.sampled,
            },
        )
