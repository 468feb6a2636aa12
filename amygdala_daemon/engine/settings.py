"""The settings that shape stored activations: recorded in the ledger, checked on every open."""

from __future__ import annotations

import json
from typing import Any

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.store.ledger import Ledger

SETTINGS_KEY = "model_settings"


def model_settings(config: Config) -> dict[str, Any]:
    """The config keys that shape what the ledger stores: changing one needs a full rebuild.

    The model keys shape the activations, the ledger dtype how they are stored; aliases are
    applied as tags are parsed.
    """
    model = config.model
    return {
        "model.name": model.name,
        "model.layers": model.layers,
        "model.pooling": model.pooling,
        "model.sink_norm_ratio": model.sink_norm_ratio,
        "model.max_tokens": model.max_tokens,
        "concepts.aliases": config.concepts.aliases,
        "ledger.activation_dtype": config.ledger.activation_dtype,
    }


def record_settings(ledger: Ledger, config: Config) -> None:
    adopt_activation_dtype(ledger, config.ledger.activation_dtype)
    ledger.set_meta_committed(SETTINGS_KEY, json.dumps(model_settings(config), sort_keys=True))


def check_model_settings(ledger: Ledger, config: Config) -> None:
    """Refuse to open a ledger whose activations were made under other model settings.

    An empty ledger simply adopts the current settings.
    """
    stored = ledger.get_meta(SETTINGS_KEY)
    wanted = model_settings(config)
    if stored is None or ledger.live_count() == 0:
        record_settings(ledger, config)
        return
    before = json.loads(stored)
    before.setdefault("ledger.activation_dtype", "float32")  # ledgers older than the key
    changed = sorted(key for key in wanted if before.get(key) != wanted[key])
    if changed:
        keys = ", ".join(changed)
        raise InputError(
            f"{keys} changed since the stored activations were made "
            f"({', '.join(f'{before.get(k)!r} -> {wanted[k]!r}' for k in changed)}); "
            "run `amygdala-daemon rebuild`"
        )


def adopt_activation_dtype(ledger: Ledger, dtype: str) -> None:
    """Store new activations as `dtype`; refused while rows of another dtype exist.

    Rows never mix dtypes: retracted rows still replay, so even those must go first.
    """
    if dtype == ledger.activation_dtype:
        return
    if ledger.conn.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None:
        raise InputError(
            f"ledger.activation_dtype: the ledger holds {ledger.activation_dtype} "
            f"activations, not {dtype}; run `amygdala-daemon rebuild`"
        )
    ledger.set_meta_committed("activation_dtype", dtype)
