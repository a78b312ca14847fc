"""JSON Schema (OpenAPI 3.1 dialect) from attrs classes, so the document never drifts from code.

The request and response classes of the admin API are the single source: the cattrs converter
structures bodies into them and this module describes them. Constraints come from field metadata
written by ``web.schemas.text`` / ``web.schemas.number`` (``min_length``, ``maximum`` ...).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

_CONSTRAINT_KEYS = ("minLength", "maxLength", "minimum", "maximum", "pattern", "format")


class SchemaBuilder:
    """Collects component schemas while describing types; ``components`` feeds OpenAPI."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # placeholder breaks recursion
            self.components[name] = self._object(cls)
        return {"$ref": f"#/components/schemas/{name}"}

    def _object(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            schema = dict(self.of(hints[field.name]))
            for key in _CONSTRAINT_KEYS:
                if key in field.metadata:
                    _apply_constraint(schema, key, field.metadata[key])
            if "description" in field.metadata:
                schema["description"] = field.metadata["description"]
            properties[field.name] = schema
            if field.default is attrs.NOTHING:
                required.append(field.name)
        out: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        if cls.__doc__:
            out["description"] = cls.__doc__.strip().splitlines()[0]
        return out

    def of(self, tp: Any) -> dict[str, Any]:
        if tp is Any:
            return {}
        if tp is type(None) or tp is None:
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        if isinstance(tp, type) and attrs.has(tp):
            return self.ref(tp)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            nullable = len(options) != len(args)
            if len(options) == 1:
                inner = self.of(options[0])
                if not nullable:
                    return inner
                if "type" in inner and "$ref" not in inner and "enum" not in inner:
                    return {**inner, "type": [inner["type"], "null"]}
                return {"anyOf": [inner, {"type": "null"}]}
            variants = [self.of(a) for a in options]
            if nullable:
                variants.append({"type": "null"})
            return {"anyOf": variants}
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [self.of(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if origin in (tuple, list, Sequence) or origin is typing.Sequence:
            item = args[0] if args else Any
            return {"type": "array", "items": self.of(item)}
        if origin in (dict, Mapping) or origin is typing.Mapping:
            value = args[1] if len(args) == 2 else Any
            return {"type": "object", "additionalProperties": self.of(value)}
        raise TypeError(f"no JSON schema for {tp!r}")


def _apply_constraint(schema: dict[str, Any], key: str, value: Any) -> None:
    """Put a constraint on the non-null branch of a (possibly nullable) schema."""
    if "anyOf" in schema:
        for branch in schema["anyOf"]:
            if branch.get("type") != "null":
                branch[key] = value
        return
    schema[key] = value
