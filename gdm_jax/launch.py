"""One entry point: ``python -m gdm_jax.launch --config=configs/<exp>.py[:preset] --workdir=DIR``."""
from __future__ import annotations

import importlib
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

# experiment name -> module with run(config, workdir) and optionally validate(config);
# only the chosen one is imported (a prefill benchmark never imports Brax).
EXPERIMENTS = {
    "odt": "gdm_jax.odt.run",
    "dreamer": "gdm_jax.dreamer.run",
    "dreamer_odt": "gdm_jax.dreamer_odt.run",
    "prepack": "gdm_jax.lm.run",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:preset]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default: runs/<experiment>)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "call jax.distributed.initialize() (multi-host TPU pods / clusters)")


def resolve(config) -> tuple[str, object]:
    """The experiment's module path and the imported module, with a clear error for unknown names."""
    name = config.get("experiment")
    if name not in EXPERIMENTS:
        raise ValueError(f"config.experiment={name!r} is not a known experiment; choose from {sorted(EXPERIMENTS)}")
    return name, importlib.import_module(EXPERIMENTS[name])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # keep orbax's INFO chatter off the progress bar
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=configs/<experiment>.py[:preset] is required")
    import jax
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    name, module = resolve(config)
    workdir = _WORKDIR.value or os.path.join("runs", name)
    from gdm_jax.core.runner import check_workdir
    try:
        if hasattr(module, "validate"):
            module.validate(config)  # bad values fail here, before any compile
        check_workdir(config, workdir)
    except ValueError as e:
        print(f"gdm_jax: error: {e}", file=sys.stderr)
        sys.exit(2)
    from gdm_jax.core.checkpoint import CheckpointError
    from gdm_jax.core.runner import NonFiniteLossError
    try:
        summary = module.run(config, workdir)
    except (CheckpointError, NonFiniteLossError) as e:
        print(f"gdm_jax: error: {e}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0 and summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    if isinstance(summary, dict) and summary.get("stopped") == "SIGTERM":
        sys.exit(143)


if __name__ == "__main__":
    app.run(main)
