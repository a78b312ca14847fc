"""What the operator reads about the settings: ``docs/configuration.md`` (generated from the
attrs classes, so the docs cannot drift: a test compares them) and ``livechat config show``
(the effective settings as TOML, secrets redacted).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import attrs

from web.settings import ENV_PREFIX, Knob, Settings, knobs

__all__ = ["REDACTED", "render_docs", "render_toml"]

REDACTED = "<redacted>"
_DOCS_PATH = "docs/configuration.md"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def render_toml(settings: Settings) -> str:
    """The effective settings as a config file ``--config`` reads back (unset keys commented
    out, secrets replaced by ``<redacted>``)."""
    lines: list[str] = []
    section = ""
    for knob in knobs():
        if knob.section != section:
            section = knob.section
            lines.append(f"{chr(10) if lines else ''}[{section}]")
        value = getattr(getattr(settings, knob.section), knob.key)
        if value is None:
            lines.append(f"# {knob.key} = (not set)")
        elif knob.secret:
            lines.append(f"{knob.key} = {_toml_value(REDACTED)}")
        else:
            lines.append(f"{knob.key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _type_text(knob: Knob) -> str:
    kind = knob.type
    optional = isinstance(kind, types.UnionType)
    if optional:
        (kind,) = (arg for arg in typing.get_args(kind) if arg is not type(None))
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    text = names.get(kind, "list of strings")
    if knob.choices is not None:
        text = "one of " + ", ".join(f"`{c}`" for c in knob.choices)
    elif kind in (int, float):
        low = "" if knob.min is None else f"{'>' if knob.min_exclusive else '≥'} {knob.min:g}"
        high = "" if knob.max is None else f"≤ {knob.max:g}"
        text += ", " + " and ".join(part for part in (low, high) if part) if low or high else ""
    return text + (", optional" if optional else "")


def _default_text(knob: Knob) -> str:
    if knob.default is None:
        return "not set"
    return f"`{_toml_value(knob.default)}`"


_INTRO = f"""\
# Configuration

<!-- Generated from web/settings_sections.py and engine/config.py by
`livechat config docs > {_DOCS_PATH}`; tests/web/test_settings.py fails when they differ. -->

The server reads its settings once, at start-up, into one frozen object with one section per
concern. Every key can be set in four places; the first one that sets it wins:

1. a command-line flag: `livechat serve --set engine.idle_timeout_s=600` (repeatable, any key),
   or one of the named flags (`--host`, `--port`, `--database-url`, `--tls-cert`, `--tls-key`,
   `--allowed-origins`, `--secret-key`, `--public-url`, `--demo`, `--master-key-file`,
   `--files-dir`);
2. an environment variable `{ENV_PREFIX}<SECTION>__<KEY>` (two underscores), e.g.
   `{ENV_PREFIX}ENGINE__IDLE_TIMEOUT_S=600`;
3. the TOML config file given by `--config` or `{ENV_PREFIX}CONFIG`, one table per section:

   ```toml
   [server]
   port = 8080

   [engine]
   idle_timeout_s = 600
   ```

4. the default below.

The flat names used before the sections (the "Flat name" column: `ws_outbox_size`,
`{ENV_PREFIX}DATABASE_URL`, a top-level `database_url = ...` in the file) still work everywhere
and mean their sectioned key; where one place gives both, the sectioned key wins. Other
`{ENV_PREFIX}*` variables are ignored, except that every `{ENV_PREFIX}<SECTION>__<KEY>` must name
a key.

An unknown key, a value of the wrong type (`port = "80"` in the file, `abc` for a number) or a
value out of range stops the server at start-up with exit status 2 and a one-line message naming
the key, e.g. `livechat: error: setting engine.idle_timeout_s (LIVECHAT_ENGINE__IDLE_TIMEOUT_S):
must be greater than 0, got 0.0`. Lists are comma-separated in flags and variables, arrays in
the file. An empty variable unsets an optional key.

`livechat config show` prints the effective settings (with `--config` and `--set` as `serve`
takes them) as a config file, secrets redacted.
"""


def render_docs() -> str:
    """``docs/configuration.md``: every key of every section, with its type, range, default,
    environment variable and former flat name."""
    out = [_INTRO]
    sections = {f.name: type(getattr(Settings(), f.name)) for f in attrs.fields(Settings)}
    section = ""
    for knob in knobs():
        if knob.section != section:
            section = knob.section
            doc = " ".join((sections[section].__doc__ or "").split())
            out.append(f"\n## [{section}]\n\n{doc}\n")
            out.append("| Key | Type | Default | Environment | Flat name | Description |")
            out.append("|---|---|---|---|---|---|")
        legacy = f"`{knob.legacy}`" if knob.legacy else ""
        secret = " Secret: redacted by `config show`." if knob.secret else ""
        out.append(
            f"| `{knob.key}` | {_type_text(knob)} | {_default_text(knob)} | `{knob.env}` "
            f"| {legacy} | {knob.doc.replace('|', '/')}{secret} |"
        )
    return "\n".join(out) + "\n"
