"""`extract-pairs` and `train`: the seed scripts' two steps, with their flags, as subcommands.

Flag values are parsed here rather than by argparse types, so a bad one is the same single
`amygdala-daemon: error:` line (exit 2) as every other input error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from amygdala_daemon.cli.common import config_from_args, progress_bar
from amygdala_daemon.core.config import ModelDtype, SourceConfig, SourceKind
from amygdala_daemon.core.errors import InputError

if TYPE_CHECKING:
    from amygdala_daemon.cli.common import Subcommands
    from amygdala_daemon.sources import MemorySource

EXTRACT_DESCRIPTION = """\
Seed step 1. Label the memory graph exactly as the daemon does and write a directory of
training examples:

  DIR/index.json                 counts per emotion and polarity, and the settings used
  DIR/<emotion>/positive.jsonl   one {"id", "text", "score"} object a line
  DIR/<emotion>/negative.jsonl

The text is the node's content with its tag lines removed. Label flags default to the
config's [labels]. The graph is --memory-mcp-url, --source, or the config's source (by
default the bundled sample graph). The directory is written aside and renamed into place.
"""

TRAIN_DESCRIPTION = """\
Seed step 2. Read a directory in the extract-pairs layout (or one written by hand: only
"text" is needed on each line), run every distinct text through the model once, and write
vectors in the published format: one layer_<idx>.vectors tensor [n_concepts, hidden] of unit
rows per layer, the manifest embedded in the safetensors metadata and written beside it.
On the same graph and settings, extract-pairs then train gives rebuild's vectors. Emotions
with no positives or no negatives are skipped and listed.
"""


_DTYPES: dict[str, ModelDtype] = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
    "auto": "auto",
}


def normalize_dtype(name: str) -> ModelDtype:
    """The model dtype the config understands, from the seed's short names.

    >>> normalize_dtype("bf16")
    'bfloat16'
    """
    try:
        return _DTYPES[name.strip().lower()]
    except KeyError:
        accepted = ", ".join(_DTYPES)
        raise InputError(f"--dtype: {name!r} is not one of {accepted}") from None


def parse_layers(text: str) -> list[int]:
    """Comma-separated block indices; negatives count from the end.

    >>> parse_layers("3, 18,-2")
    [3, 18, -2]
    """
    layers: list[int] = []
    for part in text.split(","):
        try:
            layers.append(int(part.strip()))
        except ValueError:
            raise InputError(
                f"--target-layers: {part.strip()!r} is not an integer; "
                "give comma-separated block indices such as 3,18,-2"
            ) from None
    return layers


def choose_source(
    config: SourceConfig, path: str | None = None, mcp_url: str | None = None
) -> MemorySource:
    """The graph the flags name: an MCP server, a jsonl file or directory, or the config's."""
    from amygdala_daemon import sources

    if path and mcp_url:
        raise InputError("give --source or --memory-mcp-url, not both")
    if mcp_url:
        return sources.open_source(replace(config, kind="mcp", url=mcp_url, command=[]))
    if path:
        local = Path(path).expanduser()
        if not local.exists():
            raise InputError(f"--source: {path} does not exist")
        kind: SourceKind = "directory" if local.is_dir() else "jsonl"
        return sources.open_source(replace(config, kind=kind, path=str(local)))
    return sources.open_source(config)


def _number(flag: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{flag}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise InputError(f"{flag}: {value} is outside {low:g}..{high:g}")
    return number


def _integer(flag: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{flag}: {value!r} is not an integer") from None
    if number < minimum:
        raise InputError(f"{flag}: {number} is below the minimum {minimum}")
    return number


def cmd_extract_pairs(args: argparse.Namespace) -> int:
    from amygdala_daemon.seed.pairs import extract_pairs

    config = config_from_args(args)
    # Each flag left out keeps the config's [labels] value.
    labels = config.labels
    if args.min_positive_score is not None:
        score = _number("--min-positive-score", args.min_positive_score, 0, 10)
        labels = replace(labels, min_positive_score=score)
    if args.max_negative_score is not None:
        score = _number("--max-negative-score", args.max_negative_score, 0, 10)
        labels = replace(labels, max_negative_score=score)
    if args.max_negative_mentions is not None:
        mentions = _integer("--max-negative-mentions", args.max_negative_mentions, 0)
        labels = replace(labels, max_negative_mentions=mentions)
    if args.min_content_chars is not None:
        chars = _integer("--min-content-chars", args.min_content_chars, 0)
        labels = replace(labels, min_content_chars=chars)
    cap = None
    if args.max_examples_per_emotion is not None:
        cap = _integer("--max-examples-per-emotion", args.max_examples_per_emotion, 1)
    source = choose_source(config.source, args.source, args.memory_mcp_url)
    result = extract_pairs(source, Path(args.output_dir), labels, cap, config.concepts.aliases)
    for problem in result.problems:
        print(f"extract-pairs: source problem: {problem}", file=sys.stderr)
    print(
        f"extract-pairs: {result.eligible} eligible nodes of {result.nodes}, "
        f"{len(result.counts)} emotions -> {result.output_dir}"
    )
    for name, counts in result.counts.items():
        print(f"  {name}: {counts['positive']} positive, {counts['negative']} negative")
    for name, reason in result.skipped.items():
        print(f"  skipped {name}: {reason}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from amygdala_daemon.seed.train import train

    config = config_from_args(args)
    model = config.model
    if args.model is not None:
        model = replace(model, name=args.model)
    if args.dtype is not None:
        model = replace(model, dtype=normalize_dtype(args.dtype))
    if args.target_layers is not None:
        model = replace(model, layers=parse_layers(args.target_layers))
    if args.batch_size is not None:
        model = replace(model, batch_size=_integer("--batch-size", args.batch_size, 1))
    config = replace(config, model=model)
    result = train(
        config,
        Path(args.training_data_dir),
        Path(args.output),
        Path(args.manifest) if args.manifest else None,
        layers_flag="--target-layers" if args.target_layers is not None else "config: model.layers",
        progress=lambda total, label: progress_bar(total, label, "text"),
        method=args.method,
    )
    for name, reason in result.skipped.items():
        print(f"train: skipped {name}: {reason}")
    for failure in result.failed:
        print(f"train: left out {failure}", file=sys.stderr)
    if result.stripped:
        print(f"train: removed tag lines from {result.stripped} examples before the model")
    print(
        f"train: {len(result.concepts)} concepts x layers {result.layers} from "
        f"{result.examples} examples, {result.distinct_texts} distinct texts, "
        f"{result.forward_sequences} forward passes -> {result.output} + {result.manifest_path}"
    )
    return 0


def add_seed_commands(commands: Subcommands) -> None:
    """Add `extract-pairs` and `train` to the CLI's subcommands."""
    _add_extract_pairs(commands)
    _add_train(commands)


def _add_extract_pairs(commands: Subcommands) -> None:
    extract = commands.add_parser(
        "extract-pairs",
        help="seed step 1: write (emotion, polarity, text) examples to a directory",
        description=EXTRACT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = extract.add_mutually_exclusive_group()
    where.add_argument("--memory-mcp-url", metavar="URL", help="read the graph from this server")
    where.add_argument("--source", metavar="PATH", help="a jsonl graph file or a directory")
    extract.add_argument("--output-dir", required=True, metavar="DIR", help="where to write")
    extract.add_argument(
        "--min-positive-score",
        metavar="S",
        help="positive when score >= S (default: [labels] in the config, 8)",
    )
    extract.add_argument(
        "--max-negative-score",
        metavar="S",
        help="also a negative when scored <= S (default: [labels]; unset, only untagged nodes)",
    )
    extract.add_argument(
        "--max-negative-mentions",
        metavar="N",
        help="a negative mentions the emotion's word at most N times (default: [labels], 0)",
    )
    extract.add_argument(
        "--min-content-chars",
        metavar="N",
        help="shorter content is no example (default: [labels], 40)",
    )
    extract.add_argument(
        "--max-examples-per-emotion",
        metavar="N",
        help="at most N positives and N negatives per emotion: the first N by sha256 of the "
        "node id, so the same graph always gives the same files (default: no cap)",
    )
    extract.set_defaults(func=cmd_extract_pairs)


def _add_train(commands: Subcommands) -> None:
    trainer = commands.add_parser(
        "train",
        help="seed step 2: train vectors from an extract-pairs directory",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trainer.add_argument(
        "--model", help="smollm2-135m, a Hugging Face model directory or id (default: config)"
    )
    trainer.add_argument("--training-data-dir", required=True, metavar="DIR")
    trainer.add_argument(
        "--target-layers",
        metavar="L,L,...",
        help="decoder blocks to read, comma-separated; negatives count from the end "
        "(default: config's model.layers)",
    )
    trainer.add_argument("--output", required=True, metavar="FILE", help="vectors.safetensors")
    trainer.add_argument(
        "--manifest", metavar="FILE", help="manifest.json path (default: beside --output)"
    )
    trainer.add_argument(
        "--dtype", help="model dtype: bf16, fp16, fp32 (or bfloat16, float16, float32, auto)"
    )
    trainer.add_argument(
        "--batch-size", metavar="N", help="most texts per batch, next to the token budget"
    )
    trainer.add_argument(
        "--method",
        choices=("mean_diff", "diag_lda", "shrinkage_lda"),
        default="mean_diff",
        help="direction method (default mean_diff, the seed's CAA, whatever the config says)",
    )
    trainer.set_defaults(func=cmd_train)
