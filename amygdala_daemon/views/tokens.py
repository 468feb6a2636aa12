"""Where in a text each concept fires: per-token projections onto the published vectors.

Every token is read out, position 0 and attention sinks included, the way the vLLM readout
sees them. Sinks are flagged: mean pooling leaves them out, so a vector was never fit on
them, and their projections (on SmolLM2, position 0 has a norm of about 24,000) are not
comparable with the rest. Concepts are ranked by their mean z over the tokens mean pooling
keeps, averaged over layers: by linearity that is the z of the pooled projection `probe`
shows, when the manifest pools by mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.model.extractor import Extractor
from amygdala_daemon.views.probe import Published, model_input, open_extractor, read_published

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

# A token fires (in the text output) at two negative-class standard deviations above the
# negatives' mean, on the manifest's calibration of pooled texts, when it is also among the
# text's top fifth for the concept (see `peaks`).
FIRES_AT_Z = 2.0
PEAK_SHARE = 0.2
DEFAULT_SINK_NORM_RATIO = 10.0


def sink_tokens(block_outputs: npt.NDArray[np.floating], sink_norm_ratio: float) -> Mask:
    """Which tokens mean pooling leaves out, per layer: `[n_layers, n_tokens]` of bool.

    The rule of `model.extractor.pool` for one unpadded text: position 0, and any token
    whose norm exceeds `sink_norm_ratio` times the median (the lower middle value, as
    torch's median takes it). With nothing left, no token is left out.
    """
    norms = np.linalg.norm(block_outputs.astype(np.float64), axis=-1)
    n_tokens = norms.shape[1]
    median = np.sort(norms, axis=1)[:, (n_tokens - 1) // 2]
    sinks = norms > sink_norm_ratio * median[:, None]
    sinks[:, 0] = True
    sinks[sinks.all(axis=1)] = False
    result: Mask = sinks
    return result


def _z(published: Published, raw: Array) -> Array:
    """z-scores of `[n_layers, n_concepts, n_tokens]` raw projections."""
    z = np.zeros_like(raw)
    for i, layer in enumerate(published.layers):
        for c, concept in enumerate(published.concepts):
            calibration = published.manifest["calibration"][concept][str(layer)]
            if calibration["neg_std"] > 0:
                z[i, c] = (raw[i, c] - calibration["neg_mean"]) / calibration["neg_std"]
    return z


def best_layers(published: Published, concepts: list[str], mean_z: Array) -> dict[str, int]:
    """Per concept, the layer with the best held-out AUROC in the manifest's quality.

    A manifest without quality figures falls back to the layer where this text reads highest.
    """
    quality = published.manifest.get("quality", {}).get("auroc", {})
    chosen: dict[str, int] = {}
    for concept in concepts:
        figures = [
            (value, layer)
            for layer in published.layers
            if (value := quality.get(concept, {}).get(str(layer))) is not None
        ]
        if figures:
            chosen[concept] = max(figures, key=lambda vl: (vl[0], -vl[1]))[1]
        else:
            column = published.concepts.index(concept)
            chosen[concept] = published.layers[int(np.argmax(mean_z[:, column]))]
    return chosen


def _by_layer(values: Array, layers: list[int]) -> dict[str, float]:
    """`[n_layers]` values as layer (a string, as in JSON) -> value."""
    return {str(layer): float(value) for layer, value in zip(layers, values, strict=True)}


def _read_text(published: Published, extractor: Extractor, text: str, top: int) -> dict[str, Any]:
    """One text's result: the top concepts, their mean z, and every token's readout."""
    ids, outputs = extractor.token_activations(model_input(text))
    # [n_layers, n_concepts, n_tokens]
    raw = np.stack(
        [
            published.vectors[layer] @ outputs[i].astype(np.float64).T
            for i, layer in enumerate(published.layers)
        ]
    )
    z = _z(published, raw)
    ratio = published.manifest.get("sink_norm_ratio", DEFAULT_SINK_NORM_RATIO)
    sinks = sink_tokens(outputs, ratio)
    kept = ~sinks
    # Mean over the kept tokens of each layer: [n_layers, n_concepts].
    mean_z = (z * kept[:, None, :]).sum(axis=2) / kept.sum(axis=1)[:, None]
    order = np.argsort(-mean_z.mean(axis=0), kind="stable")[:top]
    concepts = [published.concepts[int(c)] for c in order]
    layers = published.layers
    tokens = [
        {
            "token": extractor.tokenizer.decode([token_id]),
            "token_id": int(token_id),
            "sink": [layers[i] for i in np.flatnonzero(sinks[:, t])],
            "raw": {published.concepts[c]: _by_layer(raw[:, c, t], layers) for c in order},
            "z": {published.concepts[c]: _by_layer(z[:, c, t], layers) for c in order},
        }
        for t, token_id in enumerate(ids)
    ]
    return {
        "text": text,
        "layers": layers,
        "top": concepts,
        "mean_z": {published.concepts[c]: _by_layer(mean_z[:, c], layers) for c in order},
        "best_layer": best_layers(published, concepts, mean_z),
        "tokens": tokens,
    }


def probe_tokens(
    config: Config, texts: list[str], top: int = 5, layer: int | None = None
) -> list[dict[str, Any]]:
    """Per text: the top concepts and, per token, their raw and z projections at every layer.

    `layer`, when given, must be a published layer; it becomes every concept's `layer`
    (what the text output and the plots show), in place of its best layer.
    """
    if not texts:
        raise InputError("probe: no text given")
    if top < 1:
        raise InputError(f"--top: {top} is below 1")
    published = read_published(config)
    if layer is not None and layer not in published.layers:
        shown = ", ".join(str(found) for found in published.layers)
        raise InputError(f"--layer: {layer} is not a published layer (published: {shown})")
    extractor = open_extractor(config, published)
    results = []
    for text in texts:
        try:
            result = _read_text(published, extractor, text, top)
        except InputError as exc:
            raise InputError(f"probe: {text[:40]!r}: {exc}") from None
        result["layer"] = (
            {concept: layer for concept in result["top"]}
            if layer is not None
            else dict(result["best_layer"])
        )
        results.append(result)
    return results


def peaks(result: dict[str, Any], concept: str) -> set[int]:
    """Token positions where `concept` fires: z >= `FIRES_AT_Z`, and in the text's top fifth.

    Per-token projections spread wider than the pooled ones the calibration was measured
    on, so in a text that reads high, most tokens clear the z bar alone; the top fifth
    shows where in the text the concept is strongest. Sinks never count.
    """
    layer = result["layer"][concept]
    candidates = {
        position: token["z"][concept][str(layer)]
        for position, token in enumerate(result["tokens"])
        if layer not in token["sink"]
    }
    if not candidates:
        return set()
    bar = max(FIRES_AT_Z, float(np.quantile(list(candidates.values()), 1.0 - PEAK_SHARE)))
    return {position for position, z in candidates.items() if z >= bar}


def _marked(result: dict[str, Any], concept: str, fires: set[int]) -> str:
    """The text as tokens, each token where `concept` fires in [brackets]."""
    pieces = []
    for position, token in enumerate(result["tokens"]):
        shown = token["token"].replace("\n", "\u21b5")
        pieces.append(f"[{shown}]" if position in fires else shown)
    return "".join(pieces)


def format_tokens(results: list[dict[str, Any]]) -> str:
    """Per text: each top concept's firing tokens marked, then a z table, a row per token."""
    blocks = []
    for result in results:
        concepts = result["top"]
        fires = {concept: peaks(result, concept) for concept in concepts}
        lines = [
            result["text"].replace("\n", " "),
            f"  [token]: the concept fires there (z >= {FIRES_AT_Z:g}, and in the text's top "
            f"{PEAK_SHARE:.0%} for it)",
        ]
        for concept in concepts:
            mean = np.mean(list(result["mean_z"][concept].values()))
            lines.append(
                f"  {concept:<14} layer {result['layer'][concept]:<3} mean z {mean:+6.2f}  "
                + _marked(result, concept, fires[concept])
            )
        header = f"  {'#':>4}  {'token':<16}" + "".join(f"{c[:10]:>11}" for c in concepts)
        lines += ["", header]
        for position, token in enumerate(result["tokens"]):
            row = f"  {position:>4}  {repr(token['token'])[:16]:<16}"
            for concept in concepts:
                layer = result["layer"][concept]
                value = token["z"][concept][str(layer)]
                mark = "s" if layer in token["sink"] else "*" if position in fires[concept] else " "
                row += f"{value:>10.2f}{mark}"
            lines.append(row)
        lines.append(
            "  (z per token at each concept's layer; * fires; s: a sink at that layer, position 0 "
            "or an outlier norm, left out of mean pooling)"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
