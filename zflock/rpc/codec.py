"""Strict conversion between message dataclasses and JSON-able dicts.

Messages cross a trust boundary (a peer or a CLI may be older, newer or
hostile), so decoding checks every field's presence and type instead of
trusting `cls(**data)`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from zflock.rpc.errors import ProtocolError

T = TypeVar("T")


Decoder = Callable[[Any, str], Any]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def encode(message: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        raise TypeError(f"not a message: {message!r}")
    return {name: _encode_value(getattr(message, name)) for name in _field_names(type(message))}


def _encode_value(value: Any) -> Any:
    if value is None or type(value) in (str, int, bool, float):
        return value  # most fields: no dataclass check needed
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(value)
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


@functools.cache
def _schema(cls: type) -> tuple[dict[str, tuple[Decoder, bool]], frozenset[str]]:
    """Per field: its resolved type and whether it has a default; and the field names.

    Cached: `get_type_hints` re-evaluates every annotation string, and a
    listing of a thousand volumes decodes a thousand of the same class.
    """
    hints = get_type_hints(cls)
    fields = {
        f.name: (
            _decoder(hints[f.name]),
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    }
    return fields, frozenset(fields)


def decode(cls: type[T], data: Any, where: str = "") -> T:
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object")
    fields, names = _schema(cls)  # type: ignore[arg-type]  # classes are hashable
    if not names.issuperset(data):
        raise ProtocolError(f"{where}: unknown field {sorted(set(data) - names)[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, (field_decoder, has_default) in fields.items():
        if name not in data:
            if has_default:
                continue
            raise ProtocolError(f"{where}: missing field {name!r}")
        kwargs[name] = field_decoder(data[name], f"{where}.{name}")
    return cls(**kwargs)


def _decode_value(tp: Any, value: Any, where: str) -> Any:
    return _decoder(tp)(value, where)


@functools.cache
def _decoder(tp: Any) -> Decoder:
    """The checking decoder of one type, built once: `get_origin`/`get_args` per value
    were most of the time of decoding a long listing."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        optional = type(None) in options
        choices = [_decoder(o) for o in options if o is not type(None)]

        def union(value: Any, where: str) -> Any:
            if value is None and optional:
                return None
            errors = []
            for choice in choices:
                try:
                    return choice(value, where)
                except ProtocolError as exc:
                    errors.append(str(exc))
            raise ProtocolError(errors[0] if errors else f"{where}: bad value")

        return union
    if origin in (list, tuple):
        args = get_args(tp)
        item = _decoder(args[0] if args else Any)
        as_tuple = origin is tuple

        def sequence(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise ProtocolError(f"{where}: expected a list")
            items = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if as_tuple else items

        return sequence
    if origin is dict:
        _, vt = get_args(tp) or (str, Any)
        member = _decoder(vt)

        def mapping(value: Any, where: str) -> Any:
            if not isinstance(value, dict):
                raise ProtocolError(f"{where}: expected an object")
            return {str(k): member(v, f"{where}.{k}") for k, v in value.items()}

        return mapping
    if tp is Any:
        return lambda value, where: value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return lambda value, where: decode(tp, value, where)
    if tp is float:

        def number(value: Any, where: str) -> float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise ProtocolError(f"{where}: expected a number")

        return number
    if tp in (int, str, bool):

        def scalar(value: Any, where: str) -> Any:
            if type(value) is not tp:
                raise ProtocolError(f"{where}: expected {tp.__name__}")
            return value

        return scalar

    def unknown(value: Any, where: str) -> Any:
        raise ProtocolError(f"{where}: cannot decode type {tp!r}")

    return unknown
