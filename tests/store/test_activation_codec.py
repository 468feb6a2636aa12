"""Activations stored as float32, float16 or bfloat16; a ledger never mixes them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.activation_codec import FLOAT16_MAX, decode, encode, itemsize
from amygdala_daemon.store.recovery import refold
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import make_config


def sample(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3, 40)) * np.logspace(-3, 3, 40)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_size_and_error(dtype: str) -> None:
    values = sample()
    blob = encode(values, dtype)
    assert len(blob) == values.size * itemsize(dtype)
    back = decode(blob, 3, 40, dtype)
    assert back.dtype == np.float32 and back.shape == (3, 40)
    # Relative error of one rounding: 0 for float32, 2^-11 for float16, 2^-8 for bfloat16.
    bound = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype]
    small = np.abs(values) < 6e-5  # float16 subnormals: absolute, not relative, precision
    rel = np.abs(back - values)[~small] / np.abs(values)[~small]
    assert rel.max() <= bound


def test_bfloat16_rounds_like_torch() -> None:
    values = sample(1)
    expected = torch.from_numpy(values).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(decode(encode(values, "bfloat16"), 3, 40, "bfloat16"), expected)


def test_float16_saturates_instead_of_overflowing() -> None:
    values = np.array([[1e6, -1e6, 1.0]], dtype=np.float32)
    back = decode(encode(values, "float16"), 1, 3, "float16")
    assert back.tolist() == [[FLOAT16_MAX, -FLOAT16_MAX, 1.0]]


def test_a_16_bit_ledger_halves_the_rows_and_refolds_to_the_same_fold(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(
        tmp_path / "state", graph_path, tiny_model_dir, ledger={"activation_dtype": "bfloat16"}
    )
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        assert engine.ledger.activation_dtype == "bfloat16" and engine.fold is not None
        # The live fold got the stored (rounded) values, so the ledger refolds to it exactly.
        again = refold(engine.ledger, engine.shape, config.labels, engine.fold.covariance)
        assert_same_fold(again, engine.fold, rtol=1e-12)
    finally:
        engine.close()
    ledger = sqlite3.connect(StatePaths(config.state_path).ledger)
    sizes = {row for (row,) in ledger.execute("SELECT DISTINCT length(activations) FROM entries")}
    ledger.close()
    assert sizes == {2 * 64 * 2}  # 2 layers x hidden 64 x 2 bytes


def test_changing_the_dtype_of_a_full_ledger_asks_for_a_rebuild(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(tmp_path / "state", graph_path, tiny_model_dir)
    engine = Engine(config)
    engine.sync(open_source(config.source))
    engine.close()
    changed = make_config(
        tmp_path / "state", graph_path, tiny_model_dir, ledger={"activation_dtype": "float16"}
    )
    with pytest.raises(InputError, match=r"ledger.activation_dtype.*run `amygdala-daemon rebuild`"):
        Engine(changed).close()
    engine = Engine(changed, for_full_rebuild=True)
    try:
        engine.rebuild(open_source(changed.source))
        assert engine.ledger.activation_dtype == "float16"
        assert engine.fold is not None and engine.fold.total.count > 0
    finally:
        engine.close()
    Engine(changed).close()  # opens normally now
