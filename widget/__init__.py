"""The visitor's widget: static assets served by the web layer."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
