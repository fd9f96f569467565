"""Typed settings for each stage, built from the config subtree the rule passes as JSON.

Defaults live once, in the workflow's config and schema; settings classes therefore declare their
fields without defaults, and this builder names any key that is unknown or missing. A field whose
type is itself a settings dataclass is built from its sub-mapping the same way.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

S = TypeVar("S")


def settings_from_dict(cls: type[S], values: Mapping[str, Any], where: str = "") -> S:
    """Build dataclass `cls` from `values`, refusing unknown or missing keys with a clear message."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = where or cls.__name__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} in {where}; expected keys: {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"missing setting(s) {missing} in {where}")
    types = typing.get_type_hints(cls)
    built = {name: settings_from_dict(types[name], value, f"{where}.{name}")
             if dataclasses.is_dataclass(types[name]) and isinstance(value, Mapping) else value
             for name, value in values.items()}
    return cls(**built)
