"""Config dataclasses <-> YAML presets <-> command line: the one mechanism every command uses.

memrl's settings are dataclasses whose fields carry ``metadata={"help": ...}`` (TRL style).
From them this module builds:

* command-line flags (:func:`add_dataclass_arguments`): one ``--field-name`` per field with its
  help text and default, so ``--help`` documents every option;
* checked construction from dicts (:func:`build_config`): unknown keys are refused with the
  closest valid names ("did you mean memory_top_k?"), values of simple types are type-checked
  (:func:`check_field_types`);
* YAML presets (:func:`read_yaml_mapping`, :func:`preset_path`): shipped under
  ``memrl/configs/<family>/``; a preset may ``extends:`` another one of its family.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

# YAML presets ship inside the package so that a plain `pip install` has them too.
PRESET_DIR = Path(__file__).resolve().parent / "configs"
PRESET_FAMILIES = ("grpo", "poem")
EXTENDS_KEY = "extends"

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,),
                                              "str": (str, os.PathLike)}

T = TypeVar("T")


# ----------------------------------------------------------------------------- checking
def unknown_options_error(unknown: Iterable[str], valid: Iterable[str], *, what: str = "option",
                          source: str | None = None, hint: str | None = None) -> ValueError:
    """A ``ValueError`` naming the unknown keys and, for each that is close to a valid name, the
    name meant ("did you mean memory_top_k?") -- not a dump of every valid name."""
    valid = sorted(set(valid))
    unknown = sorted(set(unknown))
    meant = []
    for key in unknown:
        close = closest_names(key, valid)
        if close:
            meant.append(f"{' or '.join(close)} for {key!r}" if len(unknown) > 1 else " or ".join(close))
    where = f"{source}: " if source else ""
    message = f"{where}unknown {what}(s) {unknown}"
    if meant:
        message += f" (did you mean {'; '.join(meant)}?)"
    if hint:
        message += f"; {hint}"
    return ValueError(message)


def closest_names(name: str, valid: Iterable[str], cutoff: float = 0.6, margin: float = 0.05) -> list[str]:
    """The valid names nearest to ``name``: the best match, and others nearly as good.

    Options share prefixes (``memory_*``), so every ``memory_`` name is somewhat close to a typo of
    one of them; only names within ``margin`` of the best similarity are worth suggesting.
    """
    scored = sorted(((difflib.SequenceMatcher(None, name, v).ratio(), v) for v in valid), reverse=True)
    if not scored or scored[0][0] < cutoff:
        return []
    best = scored[0][0]
    return [v for r, v in scored if r >= best - margin][:3]


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build_config(cls: type[T], values: dict[str, Any], *, source: str | None = None) -> T:
    """``cls(**values)``, refusing unknown keys by name with the closest valid ones suggested."""
    known = field_names(cls)
    unknown = set(values) - set(known)
    if unknown:
        raise unknown_options_error(unknown, known, what=f"{cls.__name__} option", source=source)
    return cls(**values)


def check_field_types(obj: Any) -> None:
    """Raise ``ValueError`` naming the field when a dataclass field of a simple annotated type
    (``int``, ``float``, ``bool``, ``str``, optionally ``| None``) holds a value of another type.

    Config values arrive from YAML and ``--set`` as whatever YAML parsed; without this a typo such
    as ``shots=abc`` fails later inside a comparison, far from the option that caused it.
    """
    for f in dataclasses.fields(obj):
        names, optional = _annotation_parts(f)
        if len(names) != 1 or names[0] not in _SIMPLE_TYPES:
            continue
        value = getattr(obj, f.name)
        if value is None and optional:
            continue
        allowed = _SIMPLE_TYPES[names[0]]
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            raise ValueError(f"option {f.name!r} must be {'an' if names[0] == 'int' else 'a'} {names[0]}"
                             f"{' or null' if optional else ''}, got {value!r}")


def _annotation_parts(f: dataclasses.Field) -> tuple[list[str], bool]:
    """(type names without None, whether None is allowed) of a field's string annotation."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    parts = [p.strip() for p in annotation.split("|")]
    return [p for p in parts if p != "None"], "None" in parts


# ----------------------------------------------------------------------------- YAML
def yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``5e-6`` (no dot) as a string; a learning rate written that way is a number."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_yaml_value(text: str, *, what: str) -> Any:
    """One value written on the command line, typed as YAML would type it."""
    try:
        return yaml_number(yaml.safe_load(text) if text.strip() else None)
    except yaml.YAMLError as exc:
        raise ValueError(f"{what}: {text!r} is not valid YAML ({exc.__class__.__name__})") from exc


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` with YAML typing of values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_yaml_value(value, what=f"--set {item!r}")
    return out


def read_yaml_mapping(path: str | os.PathLike, family: str | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML file, with ``extends: <preset or file>`` resolved (the base first,
    this file's keys on top). Numbers written as ``5e-6`` are read as numbers."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ValueError(f"{path}: 'extends' loops back to itself ({' -> '.join(str(p) for p in _seen)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options at the top level")
    base_name = data.pop(EXTENDS_KEY, None)
    if base_name is None:
        return data
    sibling = path.parent / f"{base_name}.yaml"
    base_path = sibling if sibling.is_file() else preset_path(base_name, family)
    base = read_yaml_mapping(base_path, family, (*_seen, path.resolve()))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    # sections (train:/grpo:/memory:) merge key by key; anything else is replaced
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def preset_path(name_or_path: str | os.PathLike, family: str | None = None) -> Path:
    """A YAML path as given, or the shipped preset ``configs/<family>/<name>.yaml``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        return p
    families = [family] if family else list(PRESET_FAMILIES)
    for fam in families:
        candidate = PRESET_DIR / fam / f"{p}.yaml"
        if candidate.is_file():
            return candidate
    names = [n for fam in families for n in preset_names(fam)]
    close = closest_names(str(name_or_path), names)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise FileNotFoundError(f"no config file or preset {str(name_or_path)!r}{hint}; presets: {', '.join(names)}")


def preset_names(family: str) -> list[str]:
    """Names of the YAML presets shipped for ``family`` (``grpo``: cpu-tiny, the paper's runs;
    ``poem``: default, knn-mean). The ``base`` preset others extend is not listed."""
    return sorted(q.stem for q in (PRESET_DIR / family).glob("*.yaml") if q.stem != "base")


# ----------------------------------------------------------------------------- command line
def _flag_parser(f: dataclasses.Field) -> Any:
    """argparse ``type`` for a field: plain int/float/str, else the value typed as YAML
    (``null``, lists, mappings)."""
    names, optional = _annotation_parts(f)
    if len(names) == 1 and names[0] in ("int", "float", "str") and not optional:
        return {"int": int, "float": float, "str": str}[names[0]]
    return lambda text: parse_yaml_value(text, what=f"--{f.name.replace('_', '-')}")


def add_dataclass_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, title: str | None = None,
                            dest_prefix: str = "", rename: dict[str, str] | None = None,
                            skip: Iterable[str] = ()) -> Any:
    """Add a ``--field-name`` flag per field of ``cls`` (help text and default from the field;
    ``metadata["choices"]`` and ``metadata["nargs"]`` pass through to argparse).

    Flags default to None, so :func:`given_values` can tell what was given from what was not and
    YAML presets keep their values. Booleans get ``--x/--no-x``. ``rename`` maps a field to
    another flag (``{"seed": "--poem-seed"}``).
    """
    group = parser.add_argument_group(title) if title else parser
    rename = rename or {}
    skipped = set(skip)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skipped:
            continue
        flag = rename.get(f.name, f"--{f.name.replace('_', '-')}")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        names, _ = _annotation_parts(f)
        extra = {k: f.metadata[k] for k in ("choices", "nargs") if k in f.metadata}
        if names == ["bool"]:
            group.add_argument(flag, dest=dest_prefix + f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif "nargs" in extra:  # a list of plain strings, written as separate words
            group.add_argument(flag, dest=dest_prefix + f.name, default=None, metavar=f.name.upper(),
                               help=help_text, **extra)
        else:
            group.add_argument(flag, dest=dest_prefix + f.name, type=_flag_parser(f), default=None,
                               metavar=f.name.upper() if "choices" not in extra else None, help=help_text,
                               **extra)
    return group


def given_values(args: argparse.Namespace, cls: type, *, dest_prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (flags added by :func:`add_dataclass_arguments`)."""
    out = {}
    for name in field_names(cls):
        value = getattr(args, dest_prefix + name, None)
        if value is not None:
            out[name] = value
    return out
