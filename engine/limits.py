"""The sizes a client controls, and the field validators that bound them.

A violation raises ``InvalidMessage`` with ``code="invalid_field"`` and the field path; the
message modules (``engine.commands`` above all) use these validators.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from engine.errors import InvalidMessage

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 10_000
MAX_DRAFT_CHARS = 2_000
MAX_NAME_CHARS = 200
MAX_EMAIL_CHARS = 320
MAX_URL_CHARS = 2_048
MAX_TITLE_CHARS = 512
MAX_TAGS = 20
MAX_TAG_CHARS = 64
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_CHARS = 1_000
MAX_HISTORY_LIMIT = 200
MAX_REASON_CHARS = 500
MAX_ATTACHMENTS = 10


# ---------------------------------------------------------------- validators


def _fail(attribute: attrs.Attribute[Any], reason: str) -> InvalidMessage:
    return InvalidMessage(f"{attribute.name}: {reason}", code="invalid_field", field=attribute.name)


def valid_text(max_chars: int, *, allow_empty: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise _fail(attribute, "must be a string")
        if len(value) > max_chars:
            raise _fail(attribute, f"longer than {max_chars} characters")
        if not allow_empty and not value.strip():
            raise _fail(attribute, "must not be empty")

    return check


# Deliberately loose (RFC 5322 allows far more): something, "@", a domain with a dot, no spaces.
# Enough to refuse "dana@" or "dana" typed into an email field, never a real address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def is_email(value: str) -> bool:
    """Whether ``value`` looks like an email address (see ``_EMAIL``)."""
    return _EMAIL.fullmatch(value) is not None


def valid_email(*, allow_empty: bool) -> Callable[[Any, Any, Any], None]:
    length = valid_text(MAX_EMAIL_CHARS, allow_empty=allow_empty)

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        length(inst, attribute, value)
        if isinstance(value, str) and value.strip() and not is_email(value.strip()):
            raise _fail(attribute, "not an email address")

    return check


valid_id = valid_text(MAX_ID_CHARS)


def valid_rating(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 5:
        raise _fail(attribute, "must be between 1 and 5")


def valid_limit(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_HISTORY_LIMIT:
        raise _fail(attribute, f"must be between 1 and {MAX_HISTORY_LIMIT}")


def valid_seq(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise _fail(attribute, "must be >= 0")


def valid_tags(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if len(value) > MAX_TAGS:
        raise _fail(attribute, f"more than {MAX_TAGS} tags")
    for tag in value:
        if not tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidMessage(
                f"tag {tag!r} is empty or longer than {MAX_TAG_CHARS} characters",
                code="invalid_field",
                field=attribute.name,
            )


def valid_attributes(
    _inst: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]
) -> None:
    if len(value) > MAX_ATTRIBUTES:
        raise _fail(attribute, f"more than {MAX_ATTRIBUTES} attributes")
    for key, item in value.items():
        if len(key) > MAX_TAG_CHARS or not isinstance(item, str | int | float | bool | None):
            raise InvalidMessage(
                f"attribute {key!r}: keys up to {MAX_TAG_CHARS} characters, scalar values only",
                code="invalid_field",
                field=f"{attribute.name}.{key}",
            )
        if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_CHARS:
            raise InvalidMessage(
                f"attribute {key!r} longer than {MAX_ATTRIBUTE_CHARS} characters",
                code="invalid_field",
                field=f"{attribute.name}.{key}",
            )


def frozen_tags(value: Any) -> tuple[str, ...]:
    return tuple(value)


def valid_attachment_ids(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if len(value) > MAX_ATTACHMENTS:
        raise _fail(attribute, f"more than {MAX_ATTACHMENTS} files")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_ID_CHARS:
            raise _fail(attribute, "each must be a file id")
