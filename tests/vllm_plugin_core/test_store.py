"""The bounded per-request store and its JSON form (no vLLM needed)."""

from __future__ import annotations

import numpy as np
import pytest

from amygdala_daemon.vllm_plugin.store import Generation, ReadoutStore, render_record

GEN = Generation(
    generation=4,
    concepts=["joy", "fear"],
    layers=[2, 5],
    calibration={
        "joy": {"2": {"neg_mean": 1.0, "neg_std": 2.0}, "5": {"neg_mean": 0.0, "neg_std": 0.0}}
    },
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def raw(n_tokens: int, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(n_tokens * 4, dtype=np.float32)).reshape(n_tokens, 2, 2)


def test_cap_evicts_the_oldest_request() -> None:
    store = ReadoutStore(max_requests=2, ttl_s=100.0)
    for name in ["a-1", "b-1", "c-1"]:
        store.begin(name, [1, 2])
    assert len(store) == 2
    assert store.find("a") is None
    assert store.find("c") == "c-1"


def test_ttl_drops_idle_records_and_appending_keeps_them_alive() -> None:
    clock = Clock()
    store = ReadoutStore(max_requests=10, ttl_s=5.0, clock=clock)
    store.begin("old-x", [1])
    store.begin("busy-x", [1])
    clock.now = 4.0
    store.append("busy-x", GEN, [0], [1], raw(1))
    clock.now = 6.0
    assert store.find("old") is None
    assert store.find("busy") == "busy-x"
    clock.now = 9.5
    assert store.render("busy") is None


def test_rejects_unbounded_settings() -> None:
    with pytest.raises(ValueError, match="max_requests"):
        ReadoutStore(max_requests=0)


def test_json_shape_order_and_z() -> None:
    store = ReadoutStore()
    store.begin("cmpl-7-0-abcd1234", [10, 11, 12])
    store.append("cmpl-7-0-abcd1234", GEN, [0, 1, 2], [10, 11, 12], raw(3))
    store.append("cmpl-7-0-abcd1234", GEN, [3], [13], raw(1, start=100.0))
    readout = store.render("cmpl-7")
    assert readout is not None
    assert readout["generation"] == 4
    assert readout["concepts"] == ["joy", "fear"]
    assert readout["layers"] == [2, 5]
    assert [t["token_id"] for t in readout["tokens"]] == [10, 11, 12, 13]
    assert [t["part"] for t in readout["tokens"]] == ["prompt"] * 3 + ["completion"]
    first = readout["tokens"][0]
    # raw[token, layer, concept]: layer 2 joy is 0.0, fear 1.0; layer 5 joy 2.0, fear 3.0.
    assert first["raw"] == {"joy": {"2": 0.0, "5": 2.0}, "fear": {"2": 1.0, "5": 3.0}}
    assert first["z"]["joy"] == {"2": -0.5, "5": 0.0}  # std 0 reads as 0, as `probe` does
    assert first["z"]["fear"] == {"2": None, "5": None}  # no calibration for fear
    prompt_z = [(4.0 * t - 1.0) / 2.0 for t in range(3)]
    assert readout["prompt_mean"]["joy"]["2"] == pytest.approx(np.mean(prompt_z))
    assert readout["completion_mean"]["joy"]["2"] == pytest.approx((100.0 - 1.0) / 2.0)
    assert "fear" not in readout["prompt_mean"]
    assert readout["missing_positions"] == []


def test_positions_never_computed_are_named() -> None:
    store = ReadoutStore()
    store.begin("r-1", [5, 6, 7, 8])
    # The first two prompt tokens came from the prefix cache: no pass computed them.
    store.append("r-1", GEN, [2, 3, 4], [7, 8, 9], raw(3))
    readout = store.render("r-1")
    assert readout is not None
    assert readout["missing_positions"] == [0, 1]
    assert readout["missing_token_ids"] == [5, 6]


def test_a_recomputed_position_is_not_counted_twice() -> None:
    record_store = ReadoutStore()
    record_store.begin("r-1", [5, 6])
    record_store.append("r-1", GEN, [0, 1], [5, 6], raw(2))
    record_store.append("r-1", GEN, [0, 1], [5, 6], raw(2, start=50.0))
    key = record_store.find("r-1")
    assert key is not None
    readout = render_record(key, record_store._records[key])
    assert [t["raw"]["joy"]["2"] for t in readout["tokens"]] == [50.0, 54.0]
