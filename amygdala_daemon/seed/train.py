"""The seed's second batch step: train vectors from a training-pairs directory.

`train` reads a directory (see `pairs.py`), runs each distinct text through the model once,
folds float64 Welford statistics per emotion and polarity, and writes the published format.
On the same graph and settings the vectors equal `rebuild`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Config, Method, Shrinkage
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.manifest import Counts, Manifest, PerLayer
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.seed.pairs import POLARITIES, ProgressFactory, read_training_dir
from amygdala_daemon.store.atomic import replace_file

if TYPE_CHECKING:
    from amygdala_daemon.model.extractor import Extraction, Extractor
    from amygdala_daemon.model.loading import LoadedModel


def _missing(counts: dict[str, int]) -> str | None:
    empty = [polarity for polarity in POLARITIES if counts[polarity] == 0]
    return f"no {' and no '.join(p + 's' for p in empty)}" if empty else None


@dataclass
class TrainResult:
    output: Path
    manifest_path: Path
    concepts: list[str]
    layers: list[int]
    skipped: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    distinct_texts: int = 0
    forward_sequences: int = 0
    failed: list[str] = field(default_factory=list)
    stripped: int = 0


def _target_layers(layers: list[int], n_layers: int, flag: str) -> list[int]:
    """Checked here to name the flag in the message, resolved by the extractor's own rule."""
    from amygdala_daemon.model.extractor import default_layers, resolve_layers

    for layer in layers:
        if not -n_layers <= layer < n_layers:
            raise InputError(
                f"{flag}: layer {layer} is out of range for a model with {n_layers} decoder "
                f"blocks (accepted: {-n_layers}..{n_layers - 1})"
            )
    return resolve_layers(layers, n_layers) if layers else default_layers(n_layers)


Rows = dict[str, list[npt.NDArray[np.float32]]]
# emotion -> polarity -> texts, as `read_training_dir` gives them.
TrainingTexts = dict[str, dict[str, list[str]]]


def _fold_emotion(
    rows: Rows,
    layers: list[int],
    method: Method,
    evaluation_sample: int,
    shrinkage: Shrinkage = "mean_eigenvalue",
) -> tuple[npt.NDArray[np.float64], Counts, PerLayer]:
    """Unit direction, counts and calibration of one emotion, as the daemon computes them."""
    from amygdala_daemon.core.vectors import calibrate

    stats = {p: Welford.empty(rows[p][0].shape) for p in POLARITIES}
    for polarity in POLARITIES:
        for row in rows[polarity]:
            stats[polarity].add(row)
    unit = _unit(stats, rows, method, shrinkage)
    # Means are exact; the spread needs the projections themselves, on a bounded sample.
    spread = {}
    for polarity in POLARITIES:
        sample = np.stack(rows[polarity][:evaluation_sample]).astype(np.float64)
        projections = np.einsum("nlh,lh->nl", sample, unit)
        spread[polarity] = (
            projections.std(axis=0, ddof=1) if len(sample) > 1 else np.zeros(len(layers))
        )
    calibration = {
        str(layer): calibrate(
            unit[i],
            stats["positive"].mean[i],
            stats["negative"].mean[i],
            float(spread["positive"][i]),
            float(spread["negative"][i]),
        ).as_dict()
        for i, layer in enumerate(layers)
    }
    return unit, {"n_pos": stats["positive"].count, "n_neg": stats["negative"].count}, calibration


def _unit(
    stats: dict[str, Welford], rows: Rows, method: Method, shrinkage: Shrinkage
) -> npt.NDArray[np.float64]:
    """One emotion's unit direction; the covariance is that of its own examples."""
    from amygdala_daemon.core.covariance import Comoment, ExactCovariance
    from amygdala_daemon.core.vectors import direction, needs_covariance, unit_difference

    if not needs_covariance(method):
        return direction(stats["positive"], stats["negative"], method)
    if method != "shrinkage_lda":
        raise InputError(f"train: --method {method} needs graded scores; pairs carry polarity")
    comoment = Comoment.empty(stats["positive"].mean.shape)
    for polarity in POLARITIES:
        for row in rows[polarity]:
            comoment.add(row)
    difference = stats["positive"].mean - stats["negative"].mean
    solved = ExactCovariance(comoment, shrinkage).solve(difference[None])[0]
    return unit_difference(solved)


def _none_left(skipped: dict[str, str]) -> InputError:
    listed = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
    return InputError(f"no emotion has both positives and negatives ({listed})")


def _lacking_a_polarity(texts: TrainingTexts) -> dict[str, str]:
    """Emotions with no positives or no negatives, and which they lack."""
    return {
        name: reason
        for name, by_polarity in texts.items()
        if (reason := _missing({p: len(by_polarity[p]) for p in POLARITIES}))
    }


def _distinct_texts(texts: TrainingTexts, usable: list[str]) -> dict[str, int]:
    """The usable emotions' texts, each once, with its index in the extraction order.

    A text goes through the model once, however many emotions list it.
    """
    slot: dict[str, int] = {}
    for name in usable:
        for polarity in POLARITIES:
            for text in texts[name][polarity]:
                slot.setdefault(text, len(slot))
    return slot


def _load_extractor(config: Config, layers_flag: str) -> tuple[LoadedModel, Extractor]:
    """The configured model, hooked at the target layers (checked against its depth)."""
    from amygdala_daemon.model.extractor import Extractor, find_decoder_blocks
    from amygdala_daemon.model.loading import load_model

    model = config.model
    loaded = load_model(model, config.state_path)
    layers = _target_layers(model.layers, len(find_decoder_blocks(loaded.model)), layers_flag)
    return loaded, Extractor.from_config(model, loaded, layers=layers)


def _extract_all(
    extractor: Extractor, texts: list[str], progress: ProgressFactory | None
) -> list[Extraction]:
    # Every pooled activation stays in memory ([distinct texts, layers, hidden] float32) until
    # the fold: calibration needs them again once the directions exist.
    bar = progress(len(texts), "extracting") if progress is not None else None
    try:
        return extractor.extract(texts, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


@dataclass
class _Emotions:
    """The trained emotions' unit directions, counts and calibration, and the ones left out."""

    units: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    counts: dict[str, Counts] = field(default_factory=dict)
    calibration: dict[str, PerLayer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _fold_emotions(
    texts: TrainingTexts,
    usable: list[str],
    slot: dict[str, int],
    extractions: list[Extraction],
    layers: list[int],
    config: Config,
) -> _Emotions:
    emotions = _Emotions()
    for name in usable:
        # An example whose text failed extraction drops out, like a quarantined node.
        rows: Rows = {
            p: [a for t in texts[name][p] if (a := extractions[slot[t]].activations) is not None]
            for p in POLARITIES
        }
        reason = _missing({p: len(rows[p]) for p in POLARITIES})
        if reason:
            emotions.skipped[name] = f"{reason} left after failed extractions"
            continue
        emotions.units[name], emotions.counts[name], emotions.calibration[name] = _fold_emotion(
            rows,
            layers,
            config.vectors.method,
            config.vectors.evaluation_sample,
            config.vectors.shrinkage,
        )
    return emotions


def _train_manifest(
    config: Config,
    training_dir: Path,
    loaded: LoadedModel,
    extractor: Extractor,
    emotions: _Emotions,
    skipped: dict[str, str],
) -> Manifest:
    from amygdala_daemon.core.manifest import build_manifest
    from amygdala_daemon.model.description import describe

    info = describe(loaded, extractor, config.model)
    manifest = build_manifest(
        info,
        list(emotions.units),
        dtype=config.vectors.dtype,
        method=config.vectors.method,
        # Not a daemon generation: those count from 1.
        generation=0,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        counts=emotions.counts,
        unpublished=skipped,
        calibration=emotions.calibration,
    )
    manifest["source"] = "train"
    manifest["training_data"] = str(training_dir)
    manifest["model_dtype"] = str(loaded.dtype).removeprefix("torch.")
    return manifest


def _write_vectors(
    output: Path,
    manifest_path: Path,
    units: dict[str, npt.NDArray[np.float64]],
    layers: list[int],
    manifest: Manifest,
    config: Config,
) -> None:
    """The vectors file (one row per concept, in the manifest's order) and the manifest."""
    from amygdala_daemon.core.manifest import Release
    from amygdala_daemon.store.generations import serialize

    concepts = manifest["concepts"]
    vectors = {
        layer: np.stack([units[name][i] for name in concepts]) for i, layer in enumerate(layers)
    }
    vectors_bytes, manifest_bytes = serialize(Release(vectors, manifest), config.vectors.dtype)
    replace_file(output, vectors_bytes)
    replace_file(manifest_path, manifest_bytes)


def train(
    config: Config,
    training_dir: Path,
    output: Path,
    manifest_path: Path | None = None,
    *,
    layers_flag: str = "config: model.layers",
    progress: ProgressFactory | None = None,
    method: Method = "mean_diff",
) -> TrainResult:
    """Vectors from a training directory, with the model, layers and batching of `config.model`.

    `method` defaults to the seed's own mean difference, whatever `vectors.method` says, so
    seed results reproduce. `layers_flag` names where the layers came from, for the
    out-of-range message.
    """
    config = replace(config, vectors=replace(config.vectors, method=method))
    manifest_path = manifest_path or output.with_name("manifest.json")
    if manifest_path.resolve() == output.resolve():
        raise InputError(f"--manifest: {manifest_path} is the --output file")
    # Bad input fails here, before the model loads.
    training = read_training_dir(training_dir)
    skipped = _lacking_a_polarity(training.texts)
    usable = [name for name in training.texts if name not in skipped]
    if not usable:
        raise _none_left(skipped)
    slot = _distinct_texts(training.texts, usable)
    texts = list(slot)

    loaded, extractor = _load_extractor(config, layers_flag)
    layers = extractor.layers
    extractions = _extract_all(extractor, texts, progress)
    failed = [f"{t[:60]!r}: {e.error}" for t, e in zip(texts, extractions, strict=True) if e.error]

    emotions = _fold_emotions(training.texts, usable, slot, extractions, layers, config)
    skipped.update(emotions.skipped)
    concepts = list(emotions.units)
    if not concepts:
        raise _none_left(skipped)
    skipped = dict(sorted(skipped.items()))
    manifest = _train_manifest(config, training_dir, loaded, extractor, emotions, skipped)
    _write_vectors(output, manifest_path, emotions.units, layers, manifest, config)
    return TrainResult(
        output=output,
        manifest_path=manifest_path,
        concepts=concepts,
        layers=layers,
        skipped=skipped,
        examples=sum(c["n_pos"] + c["n_neg"] for c in emotions.counts.values()),
        distinct_texts=len(texts),
        forward_sequences=extractor.counters.sequences,
        failed=failed,
        stripped=training.stripped,
    )
