"""Publishing a generation: decide, register the rows, measure, build, check, write.

The rows are registered in the ledger before the generation that uses them is written. A crash
between the two leaves the registry ahead of `current`, which is harmless: the registry is
append-only and the next publish uses every registered row. Once a generation is written, the
vectors of its rows are kept in the registry too: a row whose concept lost all its data keeps
its last vector, however many generation directories were pruned, rolled past or deleted.

What a crash can leave half done is the pair of flat copies, renamed one after the other: every
publish first makes them `current`'s files again. And no generation becomes `current` unless
the project's own reader (`reader.load_readout`) loads it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.concepts import Selection, select_concepts
from amygdala_daemon.core.config import Config, PublishConfig
from amygdala_daemon.core.covariance import Solver
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.evaluation import evaluate, evaluation_due
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import MANIFEST_FILE, Manifest, ModelInfo, Quality
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
from amygdala_daemon.reader import ReadoutError, load_readout
from amygdala_daemon.store.generations import (
    generations,
    last_vectors,
    newest_manifest,
    repair_flat_copies,
    write_generation,
)
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.samples import covariance_solver

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
INCLUDED_BUT_UNSEEN = "named in concepts.include, but no node carries it"


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
        """Write a new generation; None when nothing changed since the newest one.

        Raises `AmygdalaError` (and `current` stays) when the generation would not load.
        """
        publish = self.config.publish
        _repair(self.published, publish)
        newest = newest_manifest(self.published)
        if not force and self.unchanged(fold, newest):
            return None
        selection = self._selection(fold, newest)
        self.ledger.register(selection.rows)
        stale = stale_concepts(fold, selection.rows)
        generation = max(generations(self.published), default=0) + 1
        solver = covariance_solver(fold, self.ledger, self.config)
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
            previous_vectors=self._last_vectors(stale),
            solver=solver,
        )
        sampled = self._sampled(draft, fold, newest, now, force, solver)
        written = write_generation(
            finish_release(draft, fold, sampled),
            self.published,
            self.config.vectors.dtype,
            publish.keep,
            publish.vectors_path,
            publish.manifest_path,
            verify=functools.partial(_check_readable, generation),
        )
        self._keep_vectors(draft, stale, sampled)
        log.info("published %s", written)
        return written

    def _keep_vectors(self, draft: Draft, stale: list[str], sampled: Sampled) -> None:
        """Store the published vectors in the ledger: for new rows always, for all rows only
        when the sampled figures were measured, so a routine publish does not rewrite
        `[n_concepts, n_layers, hidden]` into SQLite each time. A fallback for a stale row
        can be as old as the last evaluation (`vectors.evaluate_every`)."""
        measured = sampled.evaluation["ledger_seq"] == draft.manifest.get("ledger_seq")
        kept = set() if measured else self.ledger.kept_concepts()
        fresh = [name for name in draft.rows if name not in stale and name not in kept]
        if fresh:
            self.ledger.keep_vectors({name: draft.units[name] for name in fresh})

    def _selection(self, fold: Accumulators, newest: Manifest | None) -> Selection:
        """The rows, and why other concepts are left out: also included names nobody tags.

        Such a name is a typo or a tag not seen yet; it is warned of when it first appears.
        """
        counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
        selection = select_concepts(counts, self.ledger.registry(), self.config.concepts)
        unseen = [name for name in self.config.concepts.include if name not in counts]
        before = newest.get("unpublished", {}) if newest is not None else {}
        for name in unseen:
            if before.get(name) != INCLUDED_BUT_UNSEEN:
                log.warning("concepts.include names %r, but no node carries that tag", name)
        unpublished = {**selection.unpublished, **dict.fromkeys(unseen, INCLUDED_BUT_UNSEEN)}
        return Selection(selection.rows, unpublished)

    def _last_vectors(self, stale: list[str]) -> dict[str, Array]:
        """The last published vector of each stale row: from the registry, else any generation.

        A row with neither cannot be published: a zero row makes readers refuse the file.
        """
        if not stale:
            return {}
        layers, hidden = self.model.layers, self.model.hidden_size
        kept = self.ledger.kept_vectors((len(layers), hidden))
        found = {name: kept[name] for name in stale if name in kept}
        if len(found) < len(stale):
            epoch = self.ledger.get_meta("registry_epoch") or "0"
            missing = [name for name in stale if name not in found]
            found.update(last_vectors(self.published, missing, epoch, layers, hidden))
        lost = [name for name in stale if name not in found]
        if lost:
            raise AmygdalaError(
                f"publish: no data is left for {', '.join(map(repr, lost))}, and no kept "
                "generation holds its last vector; a row cannot be published empty: run "
                "`amygdala-daemon rebuild` to renumber the rows"
            )
        return found

    def _sampled(
        self,
        draft: Draft,
        fold: Accumulators,
        newest: Manifest | None,
        now: datetime,
        force: bool,
        solver: Solver | None,
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
            solver,
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


def resume(published: Path, publish: PublishConfig, ledger_seq: int) -> int:
    """On a writer's start, what a crash left undone: the ledger steps no generation holds.

    Flat copies left a generation apart are copied from `current` again here, so readers
    need not wait for the next publish.
    """
    _repair(published, publish)
    newest = newest_manifest(published)
    owed = ledger_seq - (newest.get("ledger_seq", 0) if newest is not None else 0)
    if owed > 0:
        log.info("the ledger is %d steps ahead of the newest generation", owed)
    return max(owed, 0)


def _repair(published: Path, publish: PublishConfig) -> None:
    for repaired in repair_flat_copies(published, publish.vectors_path, publish.manifest_path):
        log.warning("%s did not match the current generation: copied it again", repaired)


def _check_readable(generation: int, directory: Path) -> None:
    """Refuse a generation that `reader.load_readout` would refuse: its readers get nothing."""
    try:
        load_readout(directory, directory / MANIFEST_FILE)
    except ReadoutError as exc:
        raise AmygdalaError(
            f"publish: generation {generation} was not published, readers would reject it "
            f"({exc}); the current generation stays"
        ) from None
