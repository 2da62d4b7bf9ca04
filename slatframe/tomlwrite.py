"""Plain config data (tables, arrays of tables, scalars) as TOML text: what a config file
that loads back to the same data holds (slatframe calibrate's config, the tests' files)."""
from __future__ import annotations

import json
from typing import Any, Mapping


def value_text(value: Any) -> str:
    """One TOML value: a boolean, number, string (a JSON string is a TOML basic string),
    array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {value_text(x)}" for k, x in value.items()) + " }"
    raise TypeError(f"TOML holds no {type(value).__name__}")


def to_toml(raw: dict[str, Any], prefix: str = "") -> str:
    """TOML text of ``raw``: its scalars, then its tables and arrays of tables."""
    scalars, tables, arrays = [], [], []
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append((full, value))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            arrays.append((full, value))
        else:
            scalars.append(f"{json.dumps(key)} = {value_text(value)}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for full, value in tables:
        out += f"\n[{full}]\n" + to_toml(value, full)
    for full, items in arrays:
        for item in items:
            out += f"\n[[{full}]]\n" + to_toml(item, full)
    return out
