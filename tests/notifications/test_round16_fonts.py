"""Round 16's languages review: an e-mail's fonts are its reader's script's.

The HTML layout listed 'PingFang SC','Microsoft YaHei' (Simplified Chinese fonts) for every
language: a Traditional Chinese message took the simplified shapes of the characters both
scripts share. Now Traditional Chinese lists 'PingFang TC','Microsoft JhengHei','Noto Sans TC',
Simplified Chinese 'PingFang SC','Microsoft YaHei','Noto Sans SC', and the other languages keep
the list they had."""

from __future__ import annotations

import re

import pytest

from simcharge.kit.i18n import LANGUAGES
from simcharge.notifications.templates import render
from tests.test_i18n import SAMPLE

TRADITIONAL = ["'PingFang TC'", "'Microsoft JhengHei'", "'Noto Sans TC'"]
SIMPLIFIED = ["'PingFang SC'", "'Microsoft YaHei'"]


def _fonts(html: str) -> list[str]:
    found = re.search(r'<body style="[^"]*font-family:([^;"]+)', html)
    assert found, html[:400]
    return found.group(1).replace("&#39;", "'").split(",")


@pytest.mark.parametrize("name", ["security.totp_enabled", "order.receipt", "code.unlock"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_fonts_are_the_readers_scripts(name: str, language: str) -> None:
    message = render(name, language, SAMPLE)
    assert f'<html lang="{language}">' in message.html
    fonts = _fonts(message.html)
    assert fonts[0] == "-apple-system" and fonts[-1] == "sans-serif"
    if language == "zh-Hant":
        assert fonts[4:7] == TRADITIONAL
        assert not any(" SC'" in f or "YaHei" in f for f in fonts)
    elif language == "zh-Hans":
        assert fonts[4:7] == [*SIMPLIFIED, "'Noto Sans SC'"]
        assert not any(" TC'" in f or "JhengHei" in f for f in fonts)
    else:
        assert fonts[4:6] == SIMPLIFIED  # as before
        assert not any(" TC'" in f for f in fonts)


def test_a_language_we_do_not_speak_gets_the_default_languages_fonts() -> None:
    message = render("security.totp_enabled", "de", SAMPLE, default="zh-Hant")
    assert '<html lang="zh-Hant">' in message.html
    assert _fonts(message.html)[4:7] == TRADITIONAL
