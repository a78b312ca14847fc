"""Browser, version, OS and device class from a User-Agent string, for the visitor list.

A small ordered table of patterns, good for the browsers and systems people actually use; the
order matters (Edge and Opera say "Chrome", Chrome says "Safari"). Unknown strings give
``None`` fields rather than guesses.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["DeviceInfo", "parse_user_agent"]


@attrs.frozen(kw_only=True)
class DeviceInfo:
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    device: str | None = None  # "desktop" | "mobile" | "tablet" | "bot"


_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Edge", r"Edg(?:e|A|iOS)?/([\d.]+)"),
        ("Opera", r"(?:OPR|Opera)/([\d.]+)"),
        ("Samsung Internet", r"SamsungBrowser/([\d.]+)"),
        ("Firefox", r"(?:Firefox|FxiOS)/([\d.]+)"),
        ("Chrome", r"(?:Chrome|CriOS)/([\d.]+)"),
        ("Safari", r"Version/([\d.]+).*Safari/"),
        ("Internet Explorer", r"(?:MSIE |Trident/.*rv:)([\d.]+)"),
    )
)

_OS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Windows", r"Windows NT"),
        ("iOS", r"iPhone|iPad|iPod"),
        ("Android", r"Android"),
        ("ChromeOS", r"CrOS"),
        ("macOS", r"Mac OS X|Macintosh"),
        ("Linux", r"Linux"),
    )
)

_BOT = re.compile(r"bot|crawler|spider|slurp|headless|curl|wget|python-requests", re.I)
_TABLET = re.compile(r"iPad|Tablet|(?:Android(?!.*Mobile))", re.I)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android.*Mobile|Windows Phone", re.I)


def parse_user_agent(user_agent: str | None) -> DeviceInfo:
    """Best-effort parse; never raises."""
    if not user_agent:
        return DeviceInfo()
    ua = user_agent[:1024]
    browser = version = None
    for name, pattern in _BROWSERS:
        match = pattern.search(ua)
        if match:
            browser, version = name, match.group(1)
            break
    os_name = next((name for name, pattern in _OS if pattern.search(ua)), None)
    if _BOT.search(ua):
        device = "bot"
    elif _TABLET.search(ua):
        device = "tablet"
    elif _MOBILE.search(ua):
        device = "mobile"
    elif os_name is not None or browser is not None:
        device = "desktop"
    else:
        device = None
    return DeviceInfo(browser=browser, browser_version=version, os=os_name, device=device)
