"""Errors of the web layer.

LiveChatWebError
├── ConfigError      bad flag, environment variable or config file value
"""

from __future__ import annotations


class LiveChatWebError(Exception):
    """Root of the web layer's errors."""


class ConfigError(LiveChatWebError):
    """A setting is missing or malformed; the message names it."""
