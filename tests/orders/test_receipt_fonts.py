"""The receipts' fonts: a common subset where it covers the receipt, the full font where not;
Chinese drawn with the font of the receipt's script (Noto Sans TC for `zh-Hant`)."""

from __future__ import annotations

import logging
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simcharge.cli import app as cli
from simcharge.config import Settings, get_settings
from simcharge.orders import receipt_fonts
from simcharge.orders.receipt_fonts import (
    cjk_font_path,
    common_subset,
    covers,
    drawable,
    font_path,
    fonts_for,
    tc_font_path,
)
from simcharge.orders.receipts import ReceiptFacts, render_pdf
from tests.orders.test_receipts import _embedded_fonts, _text

FACTS = ReceiptFacts(
    language="es", operator="simcharge", number="R2026-000007",
    issued_at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC), order_reference="ORD-7",
    payer="Begoña Núñez", msisdn="+34600123456", plan="Viajero", grants=["5 GB · válido 30 días"],
    method="Tarjeta", price="12,00 €", fee="0,00 €", total="12,00 €",
    status="Pagado",
)  # fmt: skip


def _uncommon_hanzi() -> str:
    """A CJK ideograph the full CJK font has and its common subset has not."""
    subset = common_subset("cjk")
    assert subset is not None
    rare = covers(cjk_font_path()) - covers(subset)
    return chr(min(c for c in rare if 0x4E00 <= c <= 0x9FFF))


def test_a_latin_receipt_uses_the_latin_subset(caplog: pytest.LogCaptureFixture) -> None:
    latin = common_subset("latin")
    assert latin is not None and latin.parent == get_settings().font_cache_dir
    assert fonts_for(["Begoña Núñez", "12,00 €", "₱250.00", "5 GB · 30 días — ok"]) == (latin, [])
    # Far fewer glyphs than the full font, and every one a receipt in our languages prints.
    assert len(covers(latin)) < len(covers(font_path())) / 3
    with caplog.at_level(logging.WARNING, logger="fpdf"):
        pdf = render_pdf(FACTS)
    assert not [r for r in caplog.records if "missing the following glyphs" in r.getMessage()]
    assert "Begoña Núñez" in _text(pdf) and "12,00 €" in _text(pdf)
    assert [n.split("+")[-1] for n in _embedded_fonts(pdf)] == ["DejaVuSansBook"]


def test_a_character_outside_the_subset_takes_the_full_font() -> None:
    # Greek is in DejaVu Sans but not in its common subset: the whole receipt uses the full font.
    assert fonts_for(["Begoña", "Ελληνικά"]) == (font_path(), [])
    pdf = render_pdf(replace(FACTS, payer="Νίκος Παπαδόπουλος"))
    assert "Νίκος Παπαδόπουλος" in _text(pdf)


def test_chinese_uses_the_cjk_subset_and_a_rare_character_the_full_font() -> None:
    cjk = common_subset("cjk")
    latin = common_subset("latin")
    assert cjk is not None and latin is not None
    # Simplified and traditional everyday characters are both in the subset.
    assert fonts_for(["收据 李小龙", "感謝您的購買", "₱250.00"]) == (latin, [cjk])
    rare = _uncommon_hanzi()
    assert fonts_for(["李小龙", rare]) == (latin, [cjk_font_path()])
    pdf = render_pdf(replace(FACTS, payer=f"李{rare}"))
    assert f"李{rare}" in _text(pdf)
    assert sorted(n.split("+")[-1] for n in _embedded_fonts(pdf)) == [
        "DejaVuSansBook", "NotoSansCJKSCRegular"]


def test_a_traditional_receipt_draws_chinese_with_the_traditional_font(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every receipt drew Chinese with Noto Sans CJK SC, mainland China's glyph forms, also a
    receipt in traditional Chinese for Taiwan or Hong Kong, where several everyday characters
    are drawn otherwise. A `zh-Hant` receipt now draws them with Noto Sans TC; any other
    receipt keeps the SC font first."""
    tc = common_subset("cjk-tc")
    cjk = common_subset("cjk")
    latin = common_subset("latin")
    assert tc is not None and cjk is not None and latin is not None
    texts = ["收據 陳大文", "感謝您的購買", "NT$300", "期限 30 天"]
    assert fonts_for(texts, "zh-Hant") == (latin, [tc])
    assert fonts_for(texts, "zh-Hans") == (latin, [cjk])
    assert fonts_for(texts) == (latin, [cjk])
    # The subset is all of Big5, a fraction of the font's glyphs.
    assert len(covers(tc)) < len(covers(tc_font_path())) * 0.7

    facts = replace(FACTS, language="zh-Hant", payer="陳大文", plan="旅行者",
                    grants=["5 GB · 有效期 30 天"], method="信用卡", status="已付款")
    with caplog.at_level(logging.WARNING, logger="fpdf"):
        pdf = render_pdf(facts)
    assert not [r for r in caplog.records if "missing the following glyphs" in r.getMessage()]
    assert "陳大文" in _text(pdf) and "旅行者" in _text(pdf)
    assert sorted(n.split("+")[-1] for n in _embedded_fonts(pdf)) == [
        "DejaVuSansBook", "NotoSansTC"]


def test_a_character_only_the_other_chinese_font_has_is_drawn_with_it() -> None:
    """A name with a character Noto Sans TC lacks, on a traditional receipt: TC draws what it
    has, SC the rest (and the other way round), so the name is neither blank nor refused."""
    only_sc = sorted(c for c in covers(cjk_font_path()) - covers(tc_font_path())
                     if 0x4E00 <= c <= 0x9FFF)
    assert only_sc, "Noto Sans CJK SC has ideographs Noto Sans TC lacks"
    name = f"陳{chr(only_sc[0])}"
    assert drawable(name)
    tc = common_subset("cjk-tc")
    _, fallbacks = fonts_for([name], "zh-Hant")
    assert fallbacks[0] == tc and len(fallbacks) == 2
    assert fallbacks[1] in (common_subset("cjk"), cjk_font_path())
    pdf = render_pdf(replace(FACTS, language="zh-Hant", payer=name))
    assert name in _text(pdf)
    assert sorted(n.split("+")[-1] for n in _embedded_fonts(pdf)) == [
        "DejaVuSansBook", "NotoSansCJKSCRegular", "NotoSansTC"]


def test_a_subset_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipt_fonts, "get_settings", lambda: Settings(font_cache_dir=tmp_path))
    made = common_subset("latin")
    assert made is not None and made.parent == tmp_path
    assert stat.S_IMODE(made.stat().st_mode) == 0o644  # readable by the image's own user
    before = made.stat().st_mtime_ns
    assert common_subset("latin") == made
    assert made.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no part-written file left


def test_an_unwritable_directory_means_the_full_fonts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(receipt_fonts, "get_settings",
                        lambda: Settings(font_cache_dir=blocker / "fonts"))  # fmt: skip
    assert common_subset("latin") is None
    assert fonts_for(["Begoña", "李小龙"]) == (font_path(), [cjk_font_path()])
    assert fonts_for(["Begoña", "李小龍"], "zh-Hant") == (font_path(), [tc_font_path()])
    assert "Begoña Núñez" in _text(render_pdf(FACTS))


def test_the_command_makes_them_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Latin one only, to keep the test short; the CJK one is made the same way (above).
    monkeypatch.setattr(receipt_fonts, "SUBSETS", {"latin": receipt_fonts.SUBSETS["latin"]})
    monkeypatch.setenv("SIMCHARGE_FONT_CACHE_DIR", str(tmp_path / "fonts"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["receipt-fonts"])
        assert result.exit_code == 0, result.output
        made = Path(result.output.strip().splitlines()[-1])
        assert made.parent == tmp_path / "fonts" and made.name.startswith("latin-v1-")
        assert covers(made) == covers(common_subset("latin") or font_path())

        (tmp_path / "blocked").write_text("")
        monkeypatch.setenv("SIMCHARGE_FONT_CACHE_DIR", str(tmp_path / "blocked" / "fonts"))
        get_settings.cache_clear()
        result = CliRunner().invoke(cli, ["receipt-fonts"])
        assert result.exit_code == 1
        assert "1 subset(s) not made" in result.output
    finally:
        get_settings.cache_clear()
