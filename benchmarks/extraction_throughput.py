"""Benchmark 2: extraction throughput, the extractor against a plain Hugging Face forward.

The plain forward is what a straightforward script does: `output_hidden_states=True`, the
full depth and the LM head, unsorted fixed batches padded by the tokenizer, then the same
masked mean of `hidden_states[layer + 1]`. The extractor stops after the target block,
sorts by length, batches by token budget and pools on the device. Tokens per second counts
real tokens (padding excluded), over the eligible nodes of the bundled graph.

Target blocks sit at about 50% and 80% of depth: `round(f * (n_blocks - 1))`.

    .venv/bin/python benchmarks/extraction_throughput.py --threads 1
    # a Qwen2-1.5B-shaped model with random weights, on a GPU, against the card's bf16 peak:
    .venv/bin/python benchmarks/extraction_throughput.py --model qwen2-1.5b-random \\
        --device cuda --dtype bfloat16 --peak-tflops 989 --repeat 8 --batch-tokens 4096 16384
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchlib import (
    DEFAULT_WORK,
    Stopwatch,
    cuda_sync,
    eligible_contents,
    set_threads,
    smollm2_cache,
    write_result,
)

if TYPE_CHECKING:
    from amygdala_daemon.core.config import Device, ModelDtype

QWEN2_1_5B_SHAPE: dict[str, Any] = {
    "hidden_size": 1536,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "intermediate_size": 8960,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}


def load(name: str, work: Path, device: Device, dtype: ModelDtype) -> tuple[Any, Any]:
    """The model and a tokenizer. The random model borrows SmolLM2's tokenizer: every one of
    its ids is a valid id in Qwen2's larger vocabulary, and speed does not depend on either."""
    import torch

    from amygdala_daemon.core.config import ModelConfig
    from amygdala_daemon.model.loading import load_model, resolve_device, resolve_dtype

    if name == "smollm2":
        smollm2 = load_model(ModelConfig(device=device, dtype=dtype), work)
        return smollm2.model, smollm2.tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_cache(work))
    tokenizer.pad_token = tokenizer.eos_token
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    config = Qwen2Config(**{**QWEN2_1_5B_SHAPE, "attn_implementation": "sdpa"})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        torch.manual_seed(0)
        with torch.device(torch_device):
            model: Any = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs."""

    hidden: int
    q_width: int
    kv_width: int
    intermediate: int
    vocab: int
    n_blocks: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return cls(
            hidden=int(config.hidden_size),
            q_width=heads * head_dim,
            kv_width=kv_heads * head_dim,
            intermediate=int(config.intermediate_size),
            vocab=int(config.vocab_size),
            n_blocks=int(config.num_hidden_layers),
        )

    def flops(self, lengths: list[int], blocks: int, lm_head: bool) -> float:
        """Forward FLOPs on the real tokens: 2 per multiply-add, causal attention."""
        projections = self.hidden * (2 * self.q_width + 2 * self.kv_width)
        mlp = 3 * self.hidden * self.intermediate
        tokens = sum(lengths)
        per_block = float(2 * (projections + mlp) * tokens)
        # QK^T and AV: each query attends to the keys at or before it.
        per_block += sum(2 * 2 * self.q_width * length * (length + 1) / 2 for length in lengths)
        head = 2 * self.hidden * self.vocab * tokens if lm_head else 0
        return float(blocks * per_block + head)


def budget_label(resolved: int, asked: int) -> str:
    return str(resolved) if asked else f"auto {resolved}"


def plain_forward(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    layers: list[int],
    batch_size: int,
    device: str,
    max_tokens: int,
) -> tuple[int, list[int]]:
    """Full-depth forwards in input order; returns real tokens and per-text lengths."""
    import torch

    tokens, lengths = 0, list[int]()
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_tokens,
        ).to(device)
        with torch.inference_mode():
            hidden = model(**encoded, output_hidden_states=True).hidden_states
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = [(hidden[layer + 1].float() * mask).sum(1) / mask.sum(1) for layer in layers]
            torch.stack(pooled, dim=1).cpu()
        tokens += int(encoded["attention_mask"].sum())
        lengths.extend(int(n) for n in encoded["attention_mask"].sum(1))
    cuda_sync(device)
    return tokens, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "qwen2-1.5b-random"])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    parser.add_argument("--texts", type=int, default=0, help="use the first N texts (0: all)")
    parser.add_argument("--repeat", type=int, default=1, help="repeat the corpus N times")
    parser.add_argument("--concat", type=int, default=1, help="join N texts into one (longer)")
    parser.add_argument("--depths", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--plain-batch-size", type=int, default=4)
    parser.add_argument(
        "--batch-tokens",
        type=int,
        nargs="+",
        default=[0],
        help="extractor token budgets to run (0: the device's default, as model.batch_tokens = 0)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="extractor's most texts/batch")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="device peak for MFU (H100/H200 SXM bf16 dense: 989)",
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    smollm2_cache(args.work)
    from amygdala_daemon.model.extractor import Extractor

    model, tokenizer = load(args.model, args.work, args.device, args.dtype)
    shape = Shape.of(model.config)
    base = eligible_contents()
    base = base[: args.texts] if args.texts else base
    joined = [" ".join(base[i : i + args.concat]) for i in range(0, len(base), args.concat)]
    texts = joined * args.repeat
    depth_layers = {d: round(d * (shape.n_blocks - 1)) for d in args.depths}
    layers = sorted(set(depth_layers.values()))
    attention = getattr(model.config, "_attn_implementation", "unknown")
    max_tokens = 512
    print(
        f"{args.model}: {shape.n_blocks} blocks, hidden {shape.hidden}, attention {attention}; "
        f"{len(texts)} texts; device {args.device}, dtype {next(model.parameters()).dtype}, "
        f"torch threads {threads}"
    )

    # Warm up every path once (allocator, kernels), untimed.
    plain_forward(model, tokenizer, texts[:8], layers, args.plain_batch_size, args.device, 512)
    for layer in layers:
        Extractor(model, tokenizer, [layer], batch_tokens=args.batch_tokens[0]).extract(texts[:8])

    labels = [
        budget_label(Extractor(model, tokenizer, layers, batch_tokens=asked).batch_tokens, asked)
        for asked in args.batch_tokens
    ]
    runs: dict[str, list[dict[str, float]]] = {}
    lengths: list[int] = []
    for round_number in range(1, args.rounds + 1):
        clock = Stopwatch()
        with clock.running():
            tokens, lengths = plain_forward(
                model, tokenizer, texts, layers, args.plain_batch_size, args.device, max_tokens
            )
        runs.setdefault("plain", []).append(
            {"wall": clock.wall, "cpu": clock.cpu, "tokens": tokens}
        )
        print(f"round {round_number}: plain forward {tokens / clock.wall:9.1f} tok/s", flush=True)
        for depth, layer in depth_layers.items():
            for budget in args.batch_tokens:
                extractor = Extractor(
                    model,
                    tokenizer,
                    [layer],
                    max_tokens=max_tokens,
                    batch_tokens=budget,
                    batch_size=args.batch_size,
                )
                clock = Stopwatch()
                with clock.running():
                    extractor.extract(texts)
                    cuda_sync(args.device)
                key = f"extractor@{depth:g}/{budget_label(extractor.batch_tokens, budget)}"
                runs.setdefault(key, []).append(
                    {"wall": clock.wall, "cpu": clock.cpu, "tokens": extractor.counters.tokens}
                )
                print(
                    f"round {round_number}: extractor, block {layer} ({depth:.0%}), "
                    f"budget {budget_label(extractor.batch_tokens, budget)}: "
                    f"{extractor.counters.tokens / clock.wall:9.1f} tok/s",
                    flush=True,
                )

    def rate(key: str) -> dict[str, Any]:
        walls = [r["wall"] for r in runs[key]]
        cpus = [r["cpu"] for r in runs[key]]
        tokens = runs[key][0]["tokens"]
        wall = statistics.median(walls)
        return {
            "tokens": tokens,
            "wall_s_median": wall,
            "wall_s_runs": walls,
            "cpu_s_median": statistics.median(cpus),
            "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / statistics.median(cpus),
        }

    plain = rate("plain")
    plain["flops"] = shape.flops(lengths, shape.n_blocks, lm_head=True)
    results: dict[str, Any] = {"plain": plain}
    print()
    print(
        f"{'':32s} {'tok/s':>9s} {'speedup':>8s} {'tok/cpu-s':>10s} {'TFLOP/s':>8s}"
        + ("   MFU" if args.peak_tflops else "")
        + f"   ({threads} torch threads, median of {args.rounds})"
    )

    def line(label: str, figures: dict[str, Any], speedup: float) -> None:
        tflops = figures["flops"] / figures["wall_s_median"] / 1e12
        figures["tflops"] = tflops
        mfu = ""
        if args.peak_tflops:
            figures["mfu"] = tflops / args.peak_tflops
            mfu = f" {figures['mfu']:6.1%}"
        print(
            f"{label:32s} {figures['tokens_per_s']:9.1f} {speedup:7.2f}x "
            f"{figures['tokens_per_cpu_s']:10.1f} {tflops:8.3f}{mfu}"
        )

    line("plain forward (full depth + LM)", plain, 1.0)
    for depth, layer in depth_layers.items():
        for label in labels:
            key = f"extractor@{depth:g}/{label}"
            figures = rate(key)
            figures["flops"] = shape.flops(lengths, layer + 1, lm_head=False)
            figures["layer"] = layer
            figures["speedup"] = figures["tokens_per_s"] / plain["tokens_per_s"]
            results[key] = figures
            line(f"extractor block {layer} ({depth:.0%}), {label}", figures, figures["speedup"])
    goal_key = f"extractor@{args.depths[0]:g}/{labels[0]}"
    print(f"goal: >= 1.5x the plain forward at 50% depth: {results[goal_key]['speedup']:.2f}x")
    write_result(
        "extraction_throughput"
        + ("" if args.model == "smollm2" else f"_{args.model}")
        + ("" if args.device == "cpu" else f"_{args.device}"),
        {
            "threads": threads,
            "model": args.model,
            "attention": attention,
            "dtype": str(next(model.parameters()).dtype),
            "texts": len(texts),
            "mean_tokens_per_text": sum(lengths) / max(len(lengths), 1),
            "plain_batch_size": args.plain_batch_size,
            "peak_tflops": args.peak_tflops,
            "results": results,
        },
        args.device,
    )


if __name__ == "__main__":
    main()
