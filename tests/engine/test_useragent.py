from __future__ import annotations

from engine.useragent import parse_user_agent


def test_parses_common_browsers_and_devices() -> None:
    chrome = parse_user_agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    )
    assert (chrome.browser, chrome.os, chrome.device) == ("Chrome", "Windows", "desktop")
    iphone = parse_user_agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    )
    assert (iphone.browser, iphone.os, iphone.device) == ("Safari", "iOS", "mobile")
    assert parse_user_agent(None).browser is None
