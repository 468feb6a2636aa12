"""Greedy generation tokens/s in a real vLLM engine with the readout plugin off and on.

    .venv-vllm/bin/python benchmarks/vllm_readout_throughput.py [--rounds N] [--tokens N]

Publishes 14 concepts x 4 layers of random unit rows for SmolLM2-135M, then in one run starts
an engine without `VLLM_READOUT_VECTORS` (plugin installed, off), times the same greedy
generation `--rounds` times, stops it, and does the same with the plugin on. Engines run
eager, float32, one thread. Writes benchmarks/results/vllm_readout_throughput.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import set_threads, write_result  # noqa: E402

from amygdala_daemon.core.manifest import VECTORS_FILE  # noqa: E402
from tests.vllm_plugin.support import engine_env, publish, smollm2_dir  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "Write one sentence about the sea:",
    "My favourite thing about rainy days is",
    "A short list of fruits:",
]


def timed_rounds(model_dir: Path, rounds: int, tokens: int) -> tuple[list[float], list[int]]:
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found, unused-ignore]

    llm: Any = LLM(model=str(model_dir), enforce_eager=True, dtype="float32", max_model_len=512,
                   seed=0, enable_prefix_caching=False)  # fmt: skip
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    try:
        llm.generate(PROMPTS, params, use_tqdm=False)  # warm-up
        rates, first = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            outputs = llm.generate(PROMPTS, params, use_tqdm=False)
            elapsed = time.perf_counter() - start
            rates.append(sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed)
            first = list(outputs[0].outputs[0].token_ids)
        return rates, first
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    set_threads(1)
    work = Path(tempfile.mkdtemp(prefix="vllm-readout-bench-"))
    model_dir = smollm2_dir(work / "model")
    publish(work / "published", 1, 14, seed=1)
    engine_env(None)
    off, off_tokens = timed_rounds(model_dir, args.rounds, args.tokens)
    engine_env(work / "published" / "current" / VECTORS_FILE)
    on, on_tokens = timed_rounds(model_dir, args.rounds, args.tokens)
    off_median, on_median = statistics.median(off), statistics.median(on)
    payload = {
        "rounds": args.rounds,
        "prompts": len(PROMPTS),
        "tokens_per_prompt": args.tokens,
        "layers": 4,
        "concepts": 14,
        "tokens_per_s_off": off,
        "tokens_per_s_on": on,
        "median_off": off_median,
        "median_on": on_median,
        "slowdown": 1.0 - on_median / off_median,
        "same_tokens": off_tokens == on_tokens,
    }
    path = write_result("vllm_readout_throughput", payload)
    slowdown = 100 * float(payload["slowdown"])
    print(f"off: {off_median:.1f} tok/s  on: {on_median:.1f} tok/s  slowdown: {slowdown:.1f}%")
    print(f"same tokens: {payload['same_tokens']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
