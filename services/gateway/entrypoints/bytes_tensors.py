"""BYTES input tensors (a text model's strings) from every encoding a client uses.

JSON ``data`` holds strings; the binary tensor extension and gRPC's ``raw_input_contents`` hold each element
as its 4-byte little-endian length then its bytes (what ``tritonclient`` sends); gRPC's typed
``bytes_contents`` holds one bytes value per element. Every element must be UTF-8 text: the model gets a
numpy object array of ``str``. A malformed tensor raises InvalidInput saying what is wrong, never quoting
the element.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.gateway.domain import InvalidInput

_LENGTH_BYTES = 4


def strings_from_raw(name: str, shape: list[int], data: memoryview | bytes) -> np.ndarray:
    """The elements of a length-prefixed blob, shaped; InvalidInput when the blob does not hold exactly them."""
    count, view, offset = math.prod(shape), memoryview(data), 0
    elements: list[str] = []
    for position in range(count):
        if offset + _LENGTH_BYTES > len(view):
            raise InvalidInput(f"input {name!r}: the BYTES data ends before element {position} of {count}")
        length = int.from_bytes(view[offset : offset + _LENGTH_BYTES], "little")
        offset += _LENGTH_BYTES
        if offset + length > len(view):
            raise InvalidInput(f"input {name!r}: element {position}'s length {length} runs past the BYTES data")
        elements.append(_text(name, position, bytes(view[offset : offset + length])))
        offset += length
    if offset != len(view):
        raise InvalidInput(f"input {name!r}: {len(view) - offset} bytes follow the last of {count} BYTES elements")
    return _shaped(elements, shape)


def strings_from_values(name: str, shape: list[int], values: Any) -> np.ndarray:
    """The elements of a JSON ``data`` list (strings, flat or nested) or of gRPC ``bytes_contents``, shaped."""
    if not isinstance(values, list):
        raise InvalidInput(f"input {name!r}: 'data' must be a list")
    flat = _flattened(name, values, len(shape))
    count = math.prod(shape)
    if len(flat) != count:
        raise InvalidInput(f"input {name!r}: {len(flat)} values for shape {shape} ({count} expected)")
    return _shaped([_text(name, position, value) for position, value in enumerate(flat)], shape)


def _flattened(name: str, values: list[Any], depth: int) -> list[Any]:
    """Nested lists (at most ``depth`` deep, as the shape's rank allows) made flat, row-major."""
    if not any(isinstance(value, list) for value in values):
        return values
    if depth <= 1:
        raise InvalidInput(f"input {name!r}: 'data' is nested deeper than its shape")
    flat: list[Any] = []
    for value in values:
        flat.extend(_flattened(name, value, depth - 1) if isinstance(value, list) else [value])
    return flat


def _text(name: str, position: int, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r}: element {position} is not UTF-8 text") from None
    raise InvalidInput(f"input {name!r}: element {position} is a {type(value).__name__}, not a string (BYTES)")


def _shaped(elements: list[str], shape: list[int]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements  # element by element: np.array would make fixed-width unicode, not Python strings
    return array.reshape(shape)
