"""amygdala-daemon: keeps emotion readout vectors fresh from an agent's memory graph.

The names a Python user needs, imported on first use so that `import amygdala_daemon` (and
the dependency-light `amygdala_daemon.reader`) never pull in torch:

    from amygdala_daemon import Engine, load_config, open_source

    config = load_config("amygdala.toml")
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        engine.publish()
    finally:
        engine.close()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "AmygdalaError": "amygdala_daemon.core.errors",
    "Config": "amygdala_daemon.core.config",
    "ConfigError": "amygdala_daemon.core.errors",
    "Daemon": "amygdala_daemon.serving.daemon",
    "Engine": "amygdala_daemon.engine.writer",
    "Manifest": "amygdala_daemon.core.manifest",
    "MemorySource": "amygdala_daemon.sources",
    "Readout": "amygdala_daemon.reader",
    "ReadoutError": "amygdala_daemon.reader",
    "ReadoutWatcher": "amygdala_daemon.reader",
    "StatePaths": "amygdala_daemon.core.paths",
    "SyncReport": "amygdala_daemon.engine.ingest",
    "from_dict": "amygdala_daemon.core.config",
    "load_config": "amygdala_daemon.store.config_file",
    "load_readout": "amygdala_daemon.reader",
    "open_source": "amygdala_daemon.sources",
    "probe_texts": "amygdala_daemon.views.probe",
    "status_report": "amygdala_daemon.views.status",
}
# Where the defining module calls it something else.
_RENAMED = {"load_config": "load"}

__all__ = [
    "AmygdalaError",
    "Config",
    "ConfigError",
    "Daemon",
    "Engine",
    "Manifest",
    "MemorySource",
    "Readout",
    "ReadoutError",
    "ReadoutWatcher",
    "StatePaths",
    "SyncReport",
    "__version__",
    "from_dict",
    "load_config",
    "load_readout",
    "open_source",
    "probe_texts",
    "status_report",
]

if TYPE_CHECKING:
    from amygdala_daemon.core.config import Config, from_dict
    from amygdala_daemon.core.errors import AmygdalaError, ConfigError
    from amygdala_daemon.core.manifest import Manifest
    from amygdala_daemon.core.paths import StatePaths
    from amygdala_daemon.engine.ingest import SyncReport
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.reader import Readout, ReadoutError, ReadoutWatcher, load_readout
    from amygdala_daemon.serving.daemon import Daemon
    from amygdala_daemon.sources import MemorySource, open_source
    from amygdala_daemon.store.config_file import load as load_config
    from amygdala_daemon.views.probe import probe_texts
    from amygdala_daemon.views.status import status_report


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amygdala_daemon' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
