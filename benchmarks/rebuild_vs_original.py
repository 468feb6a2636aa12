"""Benchmark 1: vectors from scratch, the original method against `rebuild`, in one run.

The original method ran the model once per (emotion, example): for each emotion, its positive
and its negative examples went through a full-depth forward pass with `output_hidden_states`,
in fixed batches of 4, mean-pooled over the tokens. The daemon's `rebuild` runs each node
once, however many emotions it carries, stops after the deepest target block, and batches by
length within a token budget.

Both run on the same machine, model, graph (the bundled sample) and target layers. Reported:
texts through the model (forward passes), tokens, wall time, and the ratios. The reference's
labels are checked against the counts `rebuild` publishes.

    .venv/bin/python benchmarks/rebuild_vs_original.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchlib import (
    DEFAULT_WORK,
    Stopwatch,
    cuda_sync,
    link_model_cache,
    set_threads,
    smollm2_cache,
    write_result,
)

if TYPE_CHECKING:  # numpy is imported after the thread count is set (BLAS reads it once)
    import numpy as np
    import numpy.typing as npt

    from amygdala_daemon.core.config import Device, ModelDtype

    Array = npt.NDArray[np.float64]


@dataclass
class Examples:
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)


def original_labels() -> dict[str, Examples]:
    """Each emotion's positive and negative example texts, by DESIGN "Nodes and tags".

    Default thresholds; the content (tag lines removed) is what the model sees.
    """
    from amygdala_daemon.core.config import LabelsConfig
    from amygdala_daemon.core.labels import is_eligible, mention_count
    from amygdala_daemon.core.tags import parse_text
    from amygdala_daemon.sources import bundled_sample_path

    settings = LabelsConfig()
    eligible = []
    for line in bundled_sample_path().read_text(encoding="utf-8").splitlines():
        node = json.loads(line)
        if node.get("deleted") or not isinstance(node.get("text"), str):
            continue
        parsed = parse_text(node["text"])
        if is_eligible(parsed.tags, parsed.content, settings):
            eligible.append(parsed)
    emotions = sorted({name for parsed in eligible for name in parsed.tags})
    examples = {}
    for emotion in emotions:
        found = Examples()
        for parsed in eligible:
            score = parsed.tags.get(emotion)
            if score is not None and score >= settings.min_positive_score:
                found.positive.append(parsed.content)
                continue
            untagged_enough = score is None or (
                settings.max_negative_score is not None and score <= settings.max_negative_score
            )
            mentions = mention_count(parsed.content, emotion)
            if untagged_enough and mentions <= settings.max_negative_mentions:
                found.negative.append(parsed.content)
        examples[emotion] = found
    return examples


@dataclass
class ReferenceCounters:
    sequences: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0


def reference_means(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    layers: list[int],
    batch_size: int,
    device: str,
    counters: ReferenceCounters,
    check: Stopwatch,
) -> tuple[Array, Array]:
    """Mean over texts of the pooled `hidden_states[layer + 1]`, `[layers, hidden]`, twice:
    the original's plain token mean, and (as a check, timed apart in `check`) the daemon's
    mean with attention sinks left out."""
    import torch

    from amygdala_daemon.model.extractor import pool

    plain: Array | None = None
    sinkless: Array | None = None
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        encoded = tokenizer(batch, return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            hidden = model(**encoded, output_hidden_states=True).hidden_states
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = torch.stack(
                [(hidden[layer + 1].float() * mask).sum(1) / mask.sum(1) for layer in layers],
                dim=1,
            )
            sums = pooled.double().sum(0).cpu().numpy()
            with check.running():
                checked = torch.stack(
                    [
                        pool(hidden[layer + 1], encoded["attention_mask"], "mean", 10.0)
                        for layer in layers
                    ],
                    dim=1,
                )
                checked_sums = checked.double().sum(0).cpu().numpy()
        plain = sums if plain is None else plain + sums
        sinkless = checked_sums if sinkless is None else sinkless + checked_sums
        counters.sequences += len(batch)
        counters.batches += 1
        counters.tokens += int(encoded["attention_mask"].sum())
        counters.padded_tokens += int(encoded["attention_mask"].numel())
    assert plain is not None and sinkless is not None
    return plain / len(texts), sinkless / len(texts)


def unit_rows(difference: Array) -> Array:
    import numpy as np

    norms = np.linalg.norm(difference, axis=-1, keepdims=True)
    unit: Array = difference / np.where(norms > 0, norms, 1.0)
    return unit


def run_reference(
    work: Path,
    device: Device,
    dtype: ModelDtype,
    layers: list[int],
    batch_size: int,
    emotions: int,
) -> dict[str, Any]:
    from amygdala_daemon.core.config import ModelConfig
    from amygdala_daemon.model.extractor import default_layers, find_decoder_blocks, resolve_layers
    from amygdala_daemon.model.loading import load_model

    load = Stopwatch()
    with load.running():
        loaded = load_model(ModelConfig(device=device, dtype=dtype), work)
    model, tokenizer = loaded.model, loaded.tokenizer
    n_blocks = len(find_decoder_blocks(model))
    targets = resolve_layers(layers, n_blocks) if layers else default_layers(n_blocks)
    counters = ReferenceCounters()
    clock = Stopwatch()
    vectors: dict[str, Array] = {}
    checked: dict[str, Array] = {}
    check = Stopwatch()
    counts: dict[str, tuple[int, int]] = {}
    started = time.perf_counter()
    with clock.running():
        examples = original_labels()
        chosen = list(examples)[:emotions] if emotions else list(examples)
        for number, emotion in enumerate(chosen, start=1):
            found = examples[emotion]
            counts[emotion] = (len(found.positive), len(found.negative))
            if not found.positive or not found.negative:
                continue
            positive, positive_check = reference_means(
                model, tokenizer, found.positive, targets, batch_size, device, counters, check
            )
            negative, negative_check = reference_means(
                model, tokenizer, found.negative, targets, batch_size, device, counters, check
            )
            vectors[emotion] = unit_rows(positive - negative)
            checked[emotion] = unit_rows(positive_check - negative_check)
            print(
                f"  original method: {number}/{len(chosen)} {emotion}: "
                f"{len(found.positive)} pos + {len(found.negative)} neg, "
                f"{time.perf_counter() - started:.0f} s so far",
                flush=True,
            )
        cuda_sync(device)
    return {
        "model_load_s": load.wall,
        # The check pooling is not the original's work: it is left out of its time.
        "wall_s": clock.wall - check.wall,
        "cpu_s": clock.cpu - check.cpu,
        "check_pooling_s": check.wall,
        "forward_passes": counters.sequences,
        "batches": counters.batches,
        "tokens": counters.tokens,
        "padded_tokens": counters.padded_tokens,
        "blocks_run": n_blocks,
        "lm_head": True,
        "layers": targets,
        "emotions": len(chosen),
        "emotions_total": len(examples),
        "counts": counts,
        "_vectors": vectors,
        "_checked": checked,
    }


def run_rebuild(
    work: Path,
    cache: Path,
    device: Device,
    dtype: ModelDtype,
    layers: list[int],
    threads: int,
    run: int,
) -> dict[str, Any]:
    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.sources import open_source

    state = work / f"rebuild-state-{run}"
    shutil.rmtree(state, ignore_errors=True)
    link_model_cache(state, cache)
    config = from_dict(
        {
            "state_dir": str(state),
            "model": {
                "name": "smollm2-135m",
                "layers": layers,
                "device": device,
                "dtype": dtype,
                "threads": threads,
            },
        }
    )
    engine = Engine(config, for_full_rebuild=True)
    try:
        load = Stopwatch()
        with load.running():
            extractor = engine.load_model()  # loads the model, as rebuild would
        extract_clock = Stopwatch()
        inner = extractor.extract

        def timed_extract(texts: Any, progress: Any = None) -> Any:
            with extract_clock.running():
                result = inner(texts, progress)
                cuda_sync(device)
            return result

        extractor.extract = timed_extract  # type: ignore[method-assign]
        clock = Stopwatch()
        with clock.running():
            report = engine.rebuild(open_source(config.source))
        counters = extractor.counters
        n_blocks = extractor.n_layers
        deepest = max(extractor.layers)
    finally:
        engine.close()
    published = state / "published" / "current"
    manifest = json.loads((published / "manifest.json").read_text())
    from safetensors.numpy import load_file

    tensors = load_file(str(published / "vectors.safetensors"))
    return {
        "model_load_s": load.wall,
        "wall_s": clock.wall,
        "cpu_s": clock.cpu,
        "extract_wall_s": extract_clock.wall,
        "forward_passes": counters.sequences,
        "batches": counters.batches,
        "tokens": counters.tokens,
        "blocks_run": deepest + 1,
        "blocks_in_model": n_blocks,
        "lm_head": False,
        "applied": len(report.applied),
        "layers": manifest["layers"],
        "concepts": len(manifest["concepts"]),
        "_manifest": manifest,
        "_tensors": tensors,
    }


def compare_labels(reference: dict[str, Any], manifest: dict[str, Any]) -> tuple[int, list[str]]:
    """How many published concepts were compared, and those whose counts differ."""
    compared, mismatched = 0, []
    for name, counts in manifest["counts"].items():
        expected = reference["counts"].get(name)
        if expected is None:
            continue
        compared += 1
        if tuple(expected) != (counts["n_pos"], counts["n_neg"]):
            mismatched.append(f"{name}: original {expected}, daemon {counts}")
    return compared, mismatched


def cosines(reference: dict[str, Any], rebuilt: dict[str, Any], key: str) -> dict[str, float]:
    """Mean cosine over concepts, per layer, between reference vectors and the daemon's."""
    import numpy as np

    manifest, tensors = rebuilt["_manifest"], rebuilt["_tensors"]
    out: dict[str, float] = {}
    for i, layer in enumerate(manifest["layers"]):
        rows = tensors[f"layer_{layer}.vectors"]
        values = [
            float(np.dot(reference[key][name][i], rows[row]))
            for row, name in enumerate(manifest["concepts"])
            if name in reference[key]
        ]
        if values:
            out[str(layer)] = statistics.mean(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    parser.add_argument("--layers", type=int, nargs="*", default=[], help="default: automatic")
    parser.add_argument("--batch-size", type=int, default=4, help="the original's fixed batch")
    parser.add_argument(
        "--emotions", type=int, default=0, help="original method on the first N emotions only"
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    cache = smollm2_cache(args.work)  # the first use converts the GGUF: not timed

    print(f"torch threads {threads}, device {args.device}, dtype {args.dtype}")
    print("rebuild (run 1 of 2) ...", flush=True)
    rebuilds = [run_rebuild(args.work, cache, args.device, args.dtype, args.layers, threads, 1)]
    layers = rebuilds[0]["layers"]
    print(f"  {rebuilds[0]['wall_s']:.1f} s")
    print("original method ...", flush=True)
    reference = run_reference(
        args.work, args.device, args.dtype, layers, args.batch_size, args.emotions
    )
    print("rebuild (run 2 of 2) ...", flush=True)
    rebuilds.append(run_rebuild(args.work, cache, args.device, args.dtype, layers, threads, 2))
    print(f"  {rebuilds[1]['wall_s']:.1f} s")

    daemon_wall = statistics.median(r["wall_s"] for r in rebuilds)
    daemon = rebuilds[-1]
    compared, mismatched = compare_labels(reference, daemon["_manifest"])
    cosine = cosines(reference, daemon, "_vectors")
    cosine_check = cosines(reference, daemon, "_checked")
    ratios = {
        "forward_passes": reference["forward_passes"] / daemon["forward_passes"],
        "tokens": reference["tokens"] / daemon["tokens"],
        "token_blocks": (reference["tokens"] * reference["blocks_run"])
        / (daemon["tokens"] * daemon["blocks_run"]),
        "wall": reference["wall_s"] / daemon_wall,
    }
    partial = reference["emotions"] < reference["emotions_total"]
    print()
    print(f"                    original method      rebuild   ratio   ({threads} torch threads)")
    print(
        f"forward passes      {reference['forward_passes']:15d} {daemon['forward_passes']:12d}"
        f" {ratios['forward_passes']:7.1f}x   (goal >= 10x)"
    )
    print(
        f"tokens              {reference['tokens']:15d} {daemon['tokens']:12d}"
        f" {ratios['tokens']:7.1f}x   (+ {reference['padded_tokens'] - reference['tokens']}"
        " padding tokens in the original)"
    )
    print(
        f"blocks per token    {reference['blocks_run']:>12d}+LM {daemon['blocks_run']:12d}"
        f" {ratios['token_blocks']:7.1f}x   (tokens x blocks)"
    )
    print(
        f"wall time           {reference['wall_s']:13.1f} s {daemon_wall:10.1f} s"
        f" {ratios['wall']:7.1f}x   (goal >= 5x; rebuild runs "
        + ", ".join(f"{r['wall_s']:.1f} s" for r in rebuilds)
        + ")"
    )
    print(
        f"model load          {reference['model_load_s']:13.1f} s "
        f"{daemon['model_load_s']:10.1f} s   (not in the wall times)"
    )
    print(f"cpu time            {reference['cpu_s']:13.1f} s {daemon['cpu_s']:10.1f} s")
    print(f"rebuild: extraction {daemon['extract_wall_s']:.1f} s of {daemon['wall_s']:.1f} s")
    print(
        f"labels: {compared - len(mismatched)} of {compared} concepts compared have the "
        f"same positive and negative counts in both ({len(daemon['_manifest']['counts'])} "
        "published)" + (f"; differ: {mismatched}" if mismatched else "")
    )
    print(
        "mean cosine over concepts, per layer, to the daemon's vectors: the original's "
        f"(plain mean, sinks in) {', '.join(f'{k}: {v:.3f}' for k, v in cosine.items())}; "
        "the same forward passes pooled with the sink rule "
        f"{', '.join(f'{k}: {v:.6f}' for k, v in cosine_check.items())}"
    )
    if partial:
        print(f"PARTIAL: the original method ran {reference['emotions']} emotions only")
    strip = {k: v for k, v in reference.items() if not k.startswith("_")}
    write_result(
        "rebuild_vs_original",
        {
            "threads": threads,
            "device": args.device,
            "dtype": args.dtype,
            "original": strip,
            "rebuild_runs": [
                {k: v for k, v in r.items() if not k.startswith("_")} for r in rebuilds
            ],
            "rebuild_wall_median_s": daemon_wall,
            "ratios": ratios,
            "goals": {
                "forward_passes_10x": ratios["forward_passes"] >= 10,
                "wall_5x": ratios["wall"] >= 5,
            },
            "labels_compared": compared,
            "label_mismatches": mismatched,
            "mean_cosine_by_layer": cosine,
            "mean_cosine_by_layer_sink_rule": cosine_check,
            "partial": bool(partial),
        },
        args.device,
    )


if __name__ == "__main__":
    main()
