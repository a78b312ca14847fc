"""The HTTP API's one cattrs converter: strict JSON in, plain JSON out, precise 400s.

``api_converter`` is the only converter of the admin API boundary (the client WebSocket
boundary has its own, ``engine.client_converter``); its output becomes JSON text through
``strictjson.dumps`` (``web.httpapi.json_response``).

Strict means no silent coercion: ``"5"`` is not an ``int``, ``1`` is not a ``str``, a string is
not an array. A structuring failure becomes a ``BadRequest`` whose ``code`` says what is wrong
(``missing_field``, ``unknown_field``, ``wrong_type``, ``invalid_value``) and whose ``field`` is a
JSON path (``$.agents[2].role``).
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.preconf.json import make_converter

from web.errors import BadRequest

T = TypeVar("T")


class FieldInvalid(ValueError):
    """Raised by our attrs validators; names the field so the 400 can point at it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def text(
    *, max_len: int, min_len: int = 0, pattern: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """Field metadata plus validator for a bounded string (``None`` passes: optional fields)."""
    import re

    compiled = re.compile(pattern) if pattern else None

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not (min_len <= len(value) <= max_len):
            raise FieldInvalid(
                attribute.name, f"length must be between {min_len} and {max_len} characters"
            )
        if compiled is not None and not compiled.fullmatch(value):
            raise FieldInvalid(attribute.name, f"must match {pattern}")

    metadata: dict[str, Any] = {"maxLength": max_len}
    if min_len:
        metadata["minLength"] = min_len
    if pattern:
        metadata["pattern"] = pattern
    if description:
        metadata["description"] = description
    return {"validator": check, "metadata": metadata}


def number(*, minimum: float, maximum: float, description: str | None = None) -> dict[str, Any]:
    """Field metadata plus validator for a bounded int/float (``None`` passes)."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not (minimum <= value <= maximum):
            raise FieldInvalid(attribute.name, f"must be between {minimum} and {maximum}")

    metadata: dict[str, Any] = {"minimum": minimum, "maximum": maximum}
    if description:
        metadata["description"] = description
    return {"validator": check, "metadata": metadata}


def items(*, max_items: int, max_len: int) -> dict[str, Any]:
    """Validator for a bounded array of bounded strings."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if len(value) > max_items:
            raise FieldInvalid(attribute.name, f"at most {max_items} items")
        for i, item in enumerate(value):
            if not (1 <= len(item) <= max_len):
                raise FieldInvalid(
                    f"{attribute.name}[{i}]", f"items must be 1 to {max_len} characters"
                )

    return {"validator": check, "metadata": {"maxItems": max_items}}


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _tp: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}")
        return value

    return hook


def _make_api_converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(float, _strict(float, "a number"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))

    def enum_hook(value: Any, tp: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(m.value for m in tp)
            raise FieldInvalid("", f"must be one of: {allowed}") from None

    # StrEnum first in the MRO of our enums, before ``str``: singledispatch picks it.
    conv.register_structure_hook(enum.StrEnum, enum_hook)
    conv.register_structure_hook(enum.Enum, enum_hook)

    def is_seq(tp: Any) -> bool:
        return typing.get_origin(tp) in (tuple, list)

    def seq_factory(tp: Any) -> Callable[[Any, Any], Any]:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        origin = typing.get_origin(tp)

        def hook(value: Any, _tp: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError("expected an array")
            errors: list[Exception] = []
            out = []
            for i, item in enumerate(value):
                try:
                    out.append(conv.structure(item, inner))
                except Exception as err:
                    err.__notes__ = [
                        *getattr(err, "__notes__", []),
                        IterableValidationNote(f"Structuring item @ index {i}", i, inner),
                    ]
                    errors.append(err)
            if errors:
                raise IterableValidationError("While structuring an array", errors, tp)
            return tuple(out) if origin is tuple else out

        return hook

    conv.register_structure_hook_factory(is_seq, seq_factory)

    def is_map(tp: Any) -> bool:
        return typing.get_origin(tp) in (dict, Mapping)

    def map_factory(_tp: Any) -> Callable[[Any, Any], Any]:
        def hook(value: Any, _t: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError("expected an object")
            return dict(value)

        return hook

    conv.register_structure_hook_factory(is_map, map_factory)
    conv.register_structure_hook(Any, lambda v, _t: v)
    return conv


api_converter = _make_api_converter()


def structure_body(data: Any, cls: type[T]) -> T:
    """Structure a decoded JSON body into ``cls`` or raise a precise ``BadRequest``."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="wrong_type", field="$")
    try:
        return api_converter.structure(data, cls)
    except Exception as err:
        code, field, message = describe(err, "$")
        raise BadRequest(message, code=code, field=field) from None


def describe(err: BaseException, path: str) -> tuple[str, str, str]:
    """The first leaf error of a cattrs error tree as (code, JSON path, message)."""
    if isinstance(err, ForbiddenExtraKeysError):
        extra = sorted(err.extra_fields)[0]
        return "unknown_field", f"{path}.{extra}", f"unknown field {extra!r}"
    if isinstance(err, ClassValidationError | IterableValidationError) and err.exceptions:
        sub = err.exceptions[0]
        sub_path = path
        for note in getattr(sub, "__notes__", []):
            if isinstance(note, AttributeValidationNote):
                sub_path = f"{path}.{note.name}"
            elif isinstance(note, IterableValidationNote):
                sub_path = f"{path}[{note.index}]"
        return describe(sub, sub_path)
    if isinstance(err, FieldInvalid):
        return "invalid_value", f"{path}.{err.field}" if err.field else path, err.message
    if isinstance(err, KeyError):
        return "missing_field", path, "this field is required"
    if isinstance(err, TypeError):
        message = str(err) if str(err).startswith("expected") else "wrong type"
        return "wrong_type", path, message
    if isinstance(err, ValueError):
        return "invalid_value", path, "invalid value"
    return "invalid_value", path, "invalid value"


def unstructure(obj: Any) -> Any:
    return api_converter.unstructure(obj)
