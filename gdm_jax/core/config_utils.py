"""Config helpers: loading a config file, JSON form, flattening, and the diff that guards resumes."""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Iterable

import ml_collections


def load_config(config_arg: str, root: str = ".") -> ml_collections.ConfigDict:
    """The ConfigDict a ``configs/<file>.py[:preset]`` argument names, as the launcher reads it
    (``root`` is the folder the path is relative to); for scripts that run without the launcher."""
    path, _, preset = config_arg.partition(":")
    spec = importlib.util.spec_from_file_location("_gdm_config", os.path.join(root, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) of a ConfigDict."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def diff(saved: dict, current: dict, ignore_prefixes: Iterable[str] = ("run.",)) -> list[str]:
    """Keys whose values differ between two configs, ignoring keys under ``ignore_prefixes``."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(set(a) | set(b))
    ignore = tuple(ignore_prefixes)
    return [k for k in keys if not k.startswith(ignore) and a.get(k, "<absent>") != b.get(k, "<absent>")]
