"""Experiment files and `--config.KEY=VALUE` overrides (train.py, sample.py and the tools)."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from typing import Any, Sequence

import ml_collections

from glide_jax.config.checks import did_you_mean, validate
from glide_jax.config.defaults import ConfigError


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports an experiment file and returns its `get_config()`.

    Accepts ml_collections `config_flags` syntax: `configs/x.py` or
    `configs/x.py:ARG`, which calls `get_config("ARG")`. The file is executed
    as a fresh module each call (nothing is cached or registered).

    Raises:
      ConfigError: the file does not exist or defines no `get_config`.
    """
    text = str(path)
    arg = None
    file = pathlib.Path(text)
    if not file.is_file() and ":" in text:
        head, arg = text.rsplit(":", 1)
        file = pathlib.Path(head)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    spec = importlib.util.spec_from_file_location(f"_glide_jax_config_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {file} is not a Python file (.py) with a get_config()")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {file} defines no get_config()")
    return get_config() if arg is None else get_config(arg)


OVERRIDE_PREFIX = "--config."
OVERRIDES_HELP = ("--config.KEY=VALUE overrides a key of the config file, parsed by the key's type "
                  "(--config.KEY=None clears an optional key; a bare --config.KEY sets a boolean)")


def _is_flag(arg: str) -> bool:
    """Whether a command-line word is an option rather than a value (-1 and -3e-4 are values)."""
    if not arg.startswith("-"):
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the other arguments, the overrides), for the argparse tools, which take train.py's syntax.

    `--config.KEY=VALUE` and `--config.KEY VALUE` give "KEY=VALUE"; a bare
    `--config.KEY` (last, or before another option) gives "KEY", which
    `apply_overrides` takes as True for a boolean.
    """
    rest, overrides = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith(OVERRIDE_PREFIX):
            rest.append(arg)
        elif "=" in arg or not args or _is_flag(args[0]):
            overrides.append(arg[len(OVERRIDE_PREFIX):])
        else:
            overrides.append(f"{arg[len(OVERRIDE_PREFIX):]}={args.pop(0)}")
    return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Sets each "KEY=VALUE" (dotted KEY) on `config`, parsed by the field's type, and returns it.

    Strings are taken as written; numbers and tuples ("1,2,4" or
    "(1, 2, 4)") are Python literals, and a tuple that is not one is split at
    commas into strings ("a cat,a dog"). A boolean takes True/False, 1/0 or
    yes/no in any case, and a bare "KEY" sets it True. "None" clears an
    optional field (validation says whether it may be None).

    Raises:
      ConfigError: naming the override whose key does not exist or whose
        value does not fit the field.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        *sections, field = key.split(".")
        node = config
        for depth, part in enumerate(sections):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config has no section "
                                  f"{'.'.join(sections[:depth + 1])!r}")
        if isinstance(node.get(field), ml_collections.ConfigDict):
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} is a section; set one of its keys, "
                              f"e.g. {OVERRIDE_PREFIX}{key}.{next(iter(node[field]))}=...")
        if field not in node:
            hint = did_you_mean(field, node, "".join(f"{part}." for part in sections))
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} does not exist{hint}")
        if not sep:
            if node.get_type(field) is not bool:
                raise ConfigError(f"{OVERRIDE_PREFIX}{override}: no value (write {OVERRIDE_PREFIX}{key}=VALUE)")
            text = "True"
        try:
            node[field] = _parse_override(text, node.get_type(field))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{OVERRIDE_PREFIX}{override}: config.{key} is of type "
                              f"{node.get_type(field).__name__} ({exc})") from None
    return config


def load_cli_config(path: str | pathlib.Path, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """An experiment file's config with `--config.KEY=VALUE` overrides applied, validated."""
    return validate(apply_overrides(load_config_file(str(path)), overrides))


def _parse_override(text: str, kind: type) -> Any:
    if text == "None":
        return None
    if kind is str:
        return text
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.strip().lower() not in words:
            raise ValueError(f"{text!r} is not one of True/False, 1/0, yes/no")
        return words[text.strip().lower()]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if kind is tuple:
            return tuple(part.strip() for part in text.split(","))
        raise ValueError(f"{text!r} is not a Python literal") from None
    if kind is tuple and not isinstance(value, tuple):
        value = tuple(value) if isinstance(value, list) else (value,)
    return value
