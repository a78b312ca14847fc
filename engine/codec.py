"""The one wire converter of the client (WebSocket) boundary: dictionaries in, dictionaries out.

``client_converter`` is the boundary's only cattrs converter, for the engine's messages and the
web layer's transport frames alike (``web.protocol``). ``structure_command`` turns a decoded
frame (a ``dict`` from JSON) into a ``Command``; ``structure_frame`` does the same for any frame
class; ``unstructure`` turns a ``Result`` or ``Push`` into a ``dict`` with its ``"type"``. The
web layer does the JSON text around these (``web.protocol``); nothing else builds wire dicts.

Every malformed frame raises ``InvalidMessage`` with a stable ``code`` and a ``field`` path:

- ``unknown_type``: no or unknown ``"type"`` (``field="type"``);
- ``missing_field``: a required field is absent (``field="text"``);
- ``invalid_field``: wrong JSON type, bad enum value, too long, out of range...

Unknown extra keys are ignored (forward compatibility; the web layer keeps its ``"id"``).

``unstorable`` is the edge check every decoded client document goes through before anything
else reads it (WebSocket frames here, HTTP bodies in ``web.httpapi``): a value the databases
cannot store or JSON cannot carry back (a lone UTF-16 surrogate or NUL in any string or key, a
non-finite or out-of-range number, absurd nesting) is refused with ``invalid_field`` and its
path, instead of reaching a group commit it would fail.
"""

from __future__ import annotations

import enum
import math
import re
import typing
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import cattrs
from cattrs.errors import AttributeValidationNote, IterableValidationNote
from cattrs.preconf.json import make_converter
from cattrs.strategies import configure_tagged_union

from engine.errors import DomainError, InvalidMessage, error_code
from engine.messages import (
    COMMAND_TYPES,
    PUSH_TYPES,
    RESULT_TYPES,
    AgentStatus,
    Command,
    ErrorResult,
    Push,
    Result,
    SettableStatus,
    VisitorChange,
)

__all__ = [
    "COMMANDS_BY_TYPE",
    "MAX_JSON_DEPTH",
    "check_frame",
    "client_converter",
    "client_message",
    "error_result",
    "structure_command",
    "structure_frame",
    "structure_push",
    "structure_result",
    "unstorable",
    "unstructure",
    "unstructure_command",
]

MAX_JSON_DEPTH: Final = 32  # nesting of objects/arrays in one client document
_INT_MIN: Final = -(2**63)  # integers must fit the databases' BIGINT
_INT_MAX: Final = 2**63 - 1
# NUL: PostgreSQL text and jsonb refuse it. U+D800-U+DFFF alone: not encodable as UTF-8.
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")

_RESULT_SET = frozenset(RESULT_TYPES)
_PUSH_SET = frozenset(PUSH_TYPES)


def _tag(cls: type) -> str:
    return str(getattr(cls, "TYPE"))  # noqa: B009 - every message class has a TYPE ClassVar


COMMANDS_BY_TYPE: Mapping[str, type] = {_tag(cls): cls for cls in COMMAND_TYPES}


def _strict(expected: type | tuple[type, ...], name: str) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        # bool is an int in Python; on the wire it is not.
        if isinstance(value, bool) and bool not in (
            expected if isinstance(expected, tuple) else (expected,)
        ):
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, expected):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    """The client boundary's one converter: strict structuring of client frames (no silent
    coercion; extra keys ignored), tagged-union unstructuring of results and pushes."""
    conv = make_converter(detailed_validation=True, forbid_extra_keys=False)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(
        float, lambda v, _t: float(_strict((int, float), "a number")(v, _t))
    )
    conv.register_structure_hook_func(
        lambda t: t == Mapping[str, Any], lambda v, _t: dict(_strict(dict, "an object")(v, _t))
    )
    conv.register_structure_hook_factory(_is_typed_mapping, lambda t: _mapping_hook(conv, t))
    conv.register_structure_hook_func(
        lambda t: t == tuple[str, ...],
        _structure_str_tuple,
    )
    conv.register_structure_hook(SettableStatus, _structure_enum)
    for enum_cls in (AgentStatus, SettableStatus, VisitorChange):
        conv.register_unstructure_hook(enum_cls, _enum_value)
    configure_tagged_union(Result, conv, tag_generator=_tag, tag_name="type")
    configure_tagged_union(Push, conv, tag_generator=_tag, tag_name="type")
    return conv


def _is_typed_mapping(t: Any) -> bool:
    origin: Any = typing.get_origin(t)
    return origin in (dict, Mapping) and t != Mapping[str, Any]


def _mapping_hook(conv: cattrs.Converter, mapping: Any) -> Any:
    """``Mapping[str, V]``: an object whose values structure as ``V`` (never a list)."""
    _key, value_type = typing.get_args(mapping)

    def hook(value: Any, _t: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in _strict(dict, "an object")(value, _t).items():
            try:
                out[key] = conv.structure(item, value_type)
            except (TypeError, ValueError, cattrs.BaseValidationError) as err:
                raise InvalidMessage(f"{key}: {err}", code="invalid_field", field=key) from err
        return out

    return hook


def _enum_value(member: enum.Enum) -> Any:
    return member.value


def _structure_enum(value: Any, t: type[enum.Enum]) -> enum.Enum:
    try:
        return t(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in t)
        raise ValueError(f"expected one of {allowed}") from None


def _structure_str_tuple(value: Any, _t: Any) -> tuple[str, ...]:
    items = _strict(list, "a list")(value, _t)
    out: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidMessage(
                f"item {index}: expected a string", code="invalid_field", field=str(index)
            )
        out.append(item)
    return tuple(out)


client_converter: Final = _make_converter()
T = TypeVar("T")


def structure_frame(frame: Mapping[str, Any], cls: type[T]) -> T:
    """A client frame (or its body) as ``cls`` through the boundary's converter; raises
    ``InvalidMessage`` with the code and field path of the first problem."""
    try:
        return client_converter.structure(frame, cls)
    except InvalidMessage:
        raise
    except cattrs.BaseValidationError as exc:
        raise _translate(exc) from exc
    except (TypeError, ValueError, KeyError) as exc:  # a constructor rejected the whole frame
        raise InvalidMessage(str(exc), code="invalid_field", field="") from exc


def structure_command(frame: Any) -> Command:
    """Parse one client frame into a command; raises ``InvalidMessage`` (code + field path)."""
    if not isinstance(frame, dict):
        raise InvalidMessage("a frame is a JSON object", code="invalid_field", field="")
    tag = frame.get("type")
    if tag is None:
        raise InvalidMessage("missing 'type'", code="unknown_type", field="type")
    cls = COMMANDS_BY_TYPE.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise InvalidMessage(f"unknown type {tag!r}", code="unknown_type", field="type")
    command: Command = structure_frame(frame, cls)
    return command


Path = list[str | int]


def unstorable(document: Any) -> tuple[Path, str] | None:
    """The first value of a decoded JSON document storage could not keep, as (path, reason).

    Iterative (no recursion on client-chosen nesting); ``None`` when every string, key and
    number is storable. The reason never quotes the value.
    """
    stack: list[tuple[Any, Path]] = [(document, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE_CHAR.search(value):
                return path, "contains NUL or an unpaired UTF-16 surrogate"
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                return path, "integer out of range (64-bit)"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path, "numbers must be finite"
        elif isinstance(value, dict | list):
            if len(path) >= MAX_JSON_DEPTH:
                return path, f"nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(value, list):
                stack.extend((item, [*path, i]) for i, item in enumerate(value))
                continue
            for key, item in value.items():
                if not isinstance(key, str):
                    return path, "object keys are strings"
                if _UNSTORABLE_CHAR.search(key):
                    return path, "a key contains NUL or an unpaired UTF-16 surrogate"
                stack.append((item, [*path, key]))
        else:
            return path, f"unsupported value ({type(value).__name__})"
    return None


def check_frame(frame: Any) -> None:
    """``InvalidMessage`` (``invalid_field``, dotted ``field``) if ``unstorable(frame)``."""
    found = unstorable(frame)
    if found is not None:
        path, reason = found
        field = ".".join(str(p) for p in path)
        raise InvalidMessage(
            f"{field or 'frame'}: {reason}", code="invalid_field", field=field or None
        )


def unstructure(obj: Result | Push) -> dict[str, Any]:
    """A result or push as a wire dictionary (``"type"`` first-class, JSON-compatible values)."""
    cls = type(obj)
    if cls in _RESULT_SET:
        out: dict[str, Any] = client_converter.unstructure(obj, unstructure_as=Result)
    elif cls in _PUSH_SET:
        out = client_converter.unstructure(obj, unstructure_as=Push)
    else:
        raise TypeError(f"{cls.__name__} is neither a Result nor a Push")
    return out


def structure_push(document: Mapping[str, Any]) -> Push:
    """A push back from its wire dictionary: a cluster node forwards the pushes of a socket
    connected elsewhere (web/cluster.py); the document was made by ``unstructure``."""
    push: Push = client_converter.structure(document, Push)  # type: ignore[arg-type]
    return push


def structure_result(document: Mapping[str, Any]) -> Result:
    """A result back from its wire dictionary (see ``structure_push``)."""
    result: Result = client_converter.structure(document, Result)  # type: ignore[arg-type]
    return result


def unstructure_command(command: Command) -> dict[str, Any]:
    """A command as the client frame ``structure_command`` reads (forwarded to its owner)."""
    out: dict[str, Any] = client_converter.unstructure(command)
    out["type"] = _tag(type(command))
    return out


_RUNTIME_MESSAGES: Final = {
    "shutting_down": "the server is shutting down; retry shortly",
    "unavailable": "this part of the server is restarting; retry shortly",
}


def client_message(exc: BaseException) -> str:
    """What a client may read of an error: a domain error's own sentence, else a fixed one
    (runtime errors name internal actors; their text goes to the log only)."""
    if isinstance(exc, DomainError):
        return str(exc)
    return _RUNTIME_MESSAGES.get(error_code(exc) or "", "internal error")


def error_result(exc: BaseException) -> ErrorResult:
    """The ``error`` frame for an engine error (``code`` attribute) or anything else."""
    code = error_code(exc)
    if code is None:
        return ErrorResult(code="internal_error", message="internal error")
    retry = getattr(exc, "retry_after_s", None)
    return ErrorResult(
        code=code,
        message=client_message(exc),
        field=getattr(exc, "field", None),
        retry_after_s=float(retry) if isinstance(retry, int | float) else None,
    )


def _translate(exc: BaseException, path: str = "") -> InvalidMessage:
    """The first leaf of a cattrs validation tree, as ``InvalidMessage`` with its field path."""
    if isinstance(exc, InvalidMessage):
        if path and exc.field and not exc.field.startswith(path):
            return InvalidMessage(str(exc), code=exc.code, field=_join(path, exc.field))
        return exc
    if isinstance(exc, cattrs.BaseValidationError):
        for sub in exc.exceptions:
            segment = ""
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    segment = note.name
                elif isinstance(note, IterableValidationNote):
                    segment = str(note.index)
            return _translate(sub, _join(path, segment))
    if isinstance(exc, KeyError):
        return InvalidMessage(f"{path}: required", code="missing_field", field=path)
    return InvalidMessage(f"{path}: {exc}", code="invalid_field", field=path)


def _join(path: str, segment: str) -> str:
    if not segment:
        return path
    return f"{path}.{segment}" if path else segment
