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

    The model keys shape the activations; aliases are applied as tags are parsed.
    """
    model = config.model
    return {
        "model.name": model.name,
        "model.layers": model.layers,
        "model.pooling": model.pooling,
        "model.sink_norm_ratio": model.sink_norm_ratio,
        "model.max_tokens": model.max_tokens,
        "concepts.aliases": config.concepts.aliases,
    }


def record_settings(ledger: Ledger, config: Config) -> None:
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
    changed = sorted(key for key in wanted if before.get(key) != wanted[key])
    if changed:
        keys = ", ".join(changed)
        raise InputError(
            f"{keys} changed since the stored activations were made "
            f"({', '.join(f'{before.get(k)!r} -> {wanted[k]!r}' for k in changed)}); "
            "run `amygdala-daemon rebuild`"
        )
