"""Strict conversion between message dataclasses and JSON-able dicts.

Messages cross a trust boundary (a peer or a CLI may be older, newer or
hostile), so decoding checks every field's presence and type instead of
trusting `cls(**data)`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from zflock.rpc.errors import ProtocolError

T = TypeVar("T")


def encode(message: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        raise TypeError(f"not a message: {message!r}")
    return {f.name: _encode_value(getattr(message, f.name)) for f in dataclasses.fields(message)}


def _encode_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value)
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


def decode(cls: type[T], data: Any, where: str = "") -> T:
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ProtocolError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise ProtocolError(f"{where}: missing field {name!r}")
        kwargs[name] = _decode_value(hints[name], data[name], f"{where}.{name}")
    return cls(**kwargs)


def _decode_value(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode_value(option, value, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[0] if errors else f"{where}: bad value")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_decode_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _decode_value(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return decode(tp, value, where)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ProtocolError(f"{where}: expected a number")
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ProtocolError(f"{where}: expected {tp.__name__}")
        return value
    raise ProtocolError(f"{where}: cannot decode type {tp!r}")
