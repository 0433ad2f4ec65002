"""Small JSON files a user hands us (model cards, the catalog): read safely, checked against a JSON schema.

``read_json`` refuses what is not a small regular UTF-8 JSON file before
parsing it (size cap, no FIFO, no duplicate keys, no runaway nesting);
``validate`` checks the subset of JSON schema our schemas use, so no
``jsonschema`` dependency is needed.
"""

from __future__ import annotations

import json
import math
import re

from x2ct.errors import InputError
from x2ct.io.files import read_small_file

#: Largest JSON file read (a model card is a few kB).
MAX_JSON_BYTES = 1 << 20
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}


def read_json(path, what: str, max_bytes: int = MAX_JSON_BYTES):
    """The parsed content of a small JSON file, or an InputError saying what is wrong with it."""
    raw = read_small_file(path, what, max_bytes, "give a JSON file")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite)
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text; save it as UTF-8 JSON.") from None
    except RecursionError:
        raise InputError(f"{what} {path} is nested too deeply to be a valid file.") from None
    except ValueError as error:  # JSONDecodeError, duplicate keys, NaN/Infinity
        raise InputError(f"{what} {path} is not valid JSON ({str(error)[:200]}).") from None


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0][:80]!r}")
    return dict(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def validate(data, schema: dict, where: str = "$") -> list[str]:
    """Problems of ``data`` against a JSON schema (a subset), each one line; empty when valid.

    Supports type, enum, required, properties, additionalProperties (false),
    maxProperties, items, minItems, maxItems, minLength, maxLength, pattern,
    minimum and maximum.
    """
    kind = schema.get("type")
    if kind and (not isinstance(data, _TYPES[kind]) or (kind in ("integer", "number") and isinstance(data, bool))):
        return [f"{where} must be of type {kind}"]
    if "enum" in schema and data not in schema["enum"]:
        return [f"{where} must be one of {', '.join(map(str, schema['enum']))}"]
    problems = []
    if kind == "object":
        problems += [f"{where} lacks {key!r}" for key in schema.get("required", []) if key not in data]
        if len(data) > schema.get("maxProperties", len(data)):
            problems.append(f"{where} has more than {schema['maxProperties']} fields")
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            problems += [f"{where} has unknown field {key[:80]!r}" for key in data if key not in properties]
        for key, sub in properties.items():
            if key in data:
                problems += validate(data[key], sub, f"{where}.{key}")
    elif kind == "array":
        if len(data) < schema.get("minItems", 0):
            problems.append(f"{where} needs at least {schema['minItems']} item(s)")
        if len(data) > schema.get("maxItems", len(data)):
            problems.append(f"{where} has more than {schema['maxItems']} items")
        for n, item in enumerate(data):
            problems += validate(item, schema.get("items", {}), f"{where}[{n}]")
    elif kind == "string":
        if len(data) < schema.get("minLength", 0):
            problems.append(f"{where} must not be empty")
        if len(data) > schema.get("maxLength", len(data)):
            problems.append(f"{where} is longer than {schema['maxLength']} characters")
        elif "pattern" in schema and not re.search(schema["pattern"], data):
            problems.append(f"{where} = {data[:80]!r} does not match {schema['pattern']}")
    elif kind in ("integer", "number"):
        if data < schema.get("minimum", data):
            problems.append(f"{where} must be >= {schema['minimum']}")
        if data > schema.get("maximum", data):
            problems.append(f"{where} must be <= {schema['maximum']}")
    return problems
