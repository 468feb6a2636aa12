"""A consumer process for the hammer test: poll a ReadoutWatcher in a tight loop, check everything.

Usage: python tests/helpers/reader_loop.py VECTORS_PATH STOP_FILE RESULT_FILE [MANIFEST_PATH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from amygdala_daemon.reader import ReadoutWatcher


def main(vectors: str, stop_file: str, result_file: str, manifest: str | None) -> None:
    watcher = ReadoutWatcher(vectors, manifest)
    problems: list[str] = []
    generations: list[int] = []
    previous_concepts: list[str] = []
    polls = 0
    stopping = False
    while True:
        # One last poll after the stop file appears, so the final generation is seen.
        stopping = stopping or Path(stop_file).exists()
        readout = watcher.poll()
        polls += 1
        if watcher.last_error:
            problems.append(f"rejected a file: {watcher.last_error}")
        if readout is not None and (not generations or readout.generation != generations[-1]):
            assert readout.generation is not None
            if generations and readout.generation < generations[-1]:
                problems.append(f"went back from {generations[-1]} to {readout.generation}")
            generations.append(readout.generation)
            if readout.concepts[: len(previous_concepts)] != previous_concepts:
                problems.append(f"generation {readout.generation} reordered the rows")
            previous_concepts = readout.concepts
            for layer, rows in readout.vectors.items():
                if rows.shape[0] != len(readout.concepts):
                    problems.append(f"generation {readout.generation} layer {layer}: torn rows")
                if not np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4):
                    problems.append(f"generation {readout.generation} layer {layer}: not unit")
        if stopping:
            break
    Path(result_file).write_text(
        json.dumps(
            {
                "polls": polls,
                "generations": generations,
                "problems": problems[:20],
                "n_problems": len(problems),
                "final_concepts": previous_concepts,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
