"""Typed configuration fields and their validation: the engine every task's config is built on.

A field carries its doc, default and bounds in `metadata` (`option`), so validation, error messages, `check`'s
annotated YAML and docs/configuration.md all read from one place.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key path and what is allowed."""


def option(default, doc: str, *, choices=None, low=None, high=None, low_open=False, item_low=None, pattern=None):
    """A config field: its default, its documentation and what values it allows. pattern: (regular expression a
    string must match whole, what it allows in words)."""
    meta = {
        "doc": doc,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "item_low": item_low,
        "pattern": pattern,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class TaskConfig:
    """What every task's root config (a dataclass of sections) has besides its sections."""

    task: str  # the `task:` key naming it
    resume_locked: tuple[str, ...] = ()  # what a run directory's checkpoints fix: refused if changed on resume
    checkpoints: str = "."  # the folder under RUN_DIR/checkpoints holding the checkpoint runs resume and export from
    renamed: dict[str, str] = {}  # old key -> new key: a config naming the old one gets an error naming the new

    def to_dict(self) -> dict:
        return {"task": self.task, **dataclasses.asdict(self)}

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, the shape hparams and overrides use."""
        return {f"{s}.{k}": v for s, sec in dataclasses.asdict(self).items() for k, v in sec.items()}

    def finish(self) -> None:
        """Resolves paths and checks the rules that span fields, once every field is valid on its own."""

    @classmethod
    def upgrade(cls, raw: dict) -> None:
        """Brings a run directory's resolved config, written by older code, up to date in place."""


def build_section(section: str, cls, values: dict, renamed: dict[str, str]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            if f"{section}.{key}" in renamed:
                raise ConfigError(f"{section}.{key} is now {renamed[f'{section}.{key}']} (renamed; see CHANGELOG.md)")
            raise ConfigError(f"unknown key {section}.{key!s}; allowed keys in {section}: {names(cls)}")
        kwargs[key] = check_value(f"{section}.{key}", value, hints[key], fields[key].metadata)
    return cls(**kwargs)


def check_value(path: str, value, hint, meta):
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must not be null ({meta['doc']})")
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
    elif base is float:
        if isinstance(value, str):  # PyYAML reads YAML 1.1, where 3e-4 (no dot) is a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        if meta["pattern"] is not None and not re.fullmatch(meta["pattern"][0], value):
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {meta['pattern'][1]}")
    elif base is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(
                f"{path}: expected a mapping of names to values, e.g. {{continuous: true}}, got {value!r}"
            )
        return value
    elif typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        if typing.get_origin(item) is list:  # a list of integer lists
            if not isinstance(value, list) or not all(
                isinstance(row, list) and row and all(isinstance(v, int) and not isinstance(v, bool) for v in row)
                for row in value
            ):
                raise ConfigError(f"{path}: expected a list of integer lists, e.g. [[32, 8, 4]], got {value!r}")
            if meta["item_low"] is not None and any(v < meta["item_low"] for row in value for v in row):
                raise ConfigError(f"{path}: every entry must be >= {meta['item_low']}, got {value!r}")
            return value
        kind, example = {int: ("integers", "[64, 64]"), float: ("numbers", "[1.0, 0.5]")}.get(
            item, ("names", "[query, value]")
        )
        allowed_types = (int, float) if item is float else item
        if not isinstance(value, list) or not all(
            isinstance(v, allowed_types) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{path}: expected a list of {kind}, e.g. {example}, got {value!r}")
        if item is float:
            value = [float(v) for v in value]
        if meta["item_low"] is not None and any(v < meta["item_low"] for v in value):
            raise ConfigError(f"{path}: every entry must be >= {meta['item_low']}, got {value!r}")
        if meta["choices"] is not None and any(v not in meta["choices"] for v in value):
            wrong = next(v for v in value if v not in meta["choices"])
            raise ConfigError(f"{path}: {wrong!r} is not allowed; allowed values: {', '.join(meta['choices'])}")
        return value
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{path}: {value!r} is not allowed; allowed values: {', '.join(meta['choices'])}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        raise ConfigError(
            f"{path}: {value!r} is out of range; must be {'>' if meta['low_open'] else '>='} {low}"
            + (f" and <= {high}" if high is not None else "")
        )
    if high is not None and value > high:
        raise ConfigError(f"{path}: {value!r} is out of range; must be <= {high}")
    return value


def annotated_yaml(cfg) -> str:
    """The resolved config as YAML, every key with its documentation and allowed values as a comment: what
    `python -m pipeline check` prints. Comments aside, it loads back to the same config."""
    lines = [f"task: {cfg.task}  # {type(cfg).__doc__}"]
    for section in dataclasses.fields(cfg):
        lines.append(f"{section.name}:")
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            text = yaml.safe_dump(getattr(values, f.name), default_flow_style=True).strip()
            text = text.removesuffix("\n...")  # the document-end marker YAML puts after a lone scalar
            lines.append(f"  {f.name}: {text}  # {f.metadata['doc']}{allowed(f.metadata)}")
    return "\n".join(lines) + "\n"


def allowed(meta) -> str:
    parts = []
    if meta["choices"] is not None:
        parts.append("one of " + ", ".join(meta["choices"]))
    if meta["low"] is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {meta['low']}")
    if meta["high"] is not None:
        parts.append(f"<= {meta['high']}")
    if meta["item_low"] is not None:
        parts.append(f"each >= {meta['item_low']}")
    if meta["pattern"] is not None:
        parts.append(meta["pattern"][1])
    return f" [{'; '.join(parts)}]" if parts else ""


def names(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def reference(cfg_class) -> str:
    """Markdown reference of one task's sections and keys: default, allowed values, doc (docs/configuration.md)."""
    lines = [f"## task: {cfg_class.task}", "", cfg_class.__doc__.strip(), ""]
    for section in dataclasses.fields(cfg_class):
        lines += [f"### {section.name}", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(section.default_factory):
            default = (
                yaml.safe_dump(
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default,
                    default_flow_style=True,
                )
                .strip()
                .removesuffix("\n...")
            )
            allowed_values = allowed(f.metadata).strip().removeprefix("[").removesuffix("]")
            doc = f.metadata["doc"].replace("|", "\\|")
            lines.append(f"| `{section.name}.{f.name}` | `{default}` | {allowed_values} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def require_split(key: str, *, what: str, count: int, parts: int, over: str, allowed: str) -> None:
    """Batch sizes in a config are totals, split over workers or replicas: a count that is no multiple of parts is a
    config error naming the key, e.g. "sft.batch_size: 32 documents do not split evenly over 3 replicas" (over:
    the parts in words)."""
    if count % parts:
        raise ConfigError(f"{key}: {what} do not split evenly over {over}; allowed: {allowed}")
