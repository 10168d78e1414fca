"""openpi's wire format: msgpack, with numpy arrays as maps {b"__ndarray__": True, b"data", b"dtype", b"shape"}
and numpy scalars as {b"__npgeneric__": True, b"data", b"dtype"}, so openpi's clients and `gpc serve` read each
other's messages. Decoding is strict where openpi's is not: only bool, number and string dtypes (never
object arrays), and the data must fill the shape exactly, so a bad message is refused, not misread."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

DTYPE_KINDS = "biufUS"  # bool, int, uint, float, str, bytes


class WireError(ValueError):
    """A message that is not openpi's msgpack."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in DTYPE_KINDS:
        raise WireError(f"cannot send a numpy array of dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _dtype(raw: Any) -> np.dtype:
    try:
        dtype = np.dtype(raw) if isinstance(raw, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in DTYPE_KINDS or dtype.itemsize == 0:
        raise WireError(f"array dtype {raw!r}: only bool, integer, float and string dtypes are accepted")
    return dtype


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype, data, shape = _dtype(obj.get(b"dtype")), obj.get(b"data"), obj.get(b"shape")
        if not isinstance(data, bytes) or not isinstance(shape, list) or \
                not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise WireError("an array needs bytes 'data' and a 'shape' of non-negative integers")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise WireError(f"array of shape {tuple(shape)} and dtype {dtype.str} needs "
                            f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        try:
            return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as err:
            raise WireError(f"numpy scalar: {err}") from None
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """The message, or WireError saying why it is not one."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except Exception as err:  # noqa: BLE001 - msgpack raises many types for malformed input
        raise WireError(f"not a msgpack message ({type(err).__name__}{': ' if str(err) else ''}{err})") from None
