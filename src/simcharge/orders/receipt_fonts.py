"""The receipts' fonts, and smaller copies of them for the common case.

fpdf2 reads every glyph of a font each time a PDF adds it: DejaVu Sans (6,200 glyphs) costs
about 60 ms a receipt, Noto Sans CJK SC (65,000) close to a second. So each font has a **common
subset**, made once and kept on disk (`SIMCHARGE_FONT_CACHE_DIR`): DejaVu Sans cut to Latin
(with Latin Extended and Vietnamese), punctuation, currency signs, arrows and mathematical
operators; Noto Sans CJK SC cut to GB 2312 (every simplified character in everyday use) and
Big5's frequent characters (traditional); Noto Sans TC cut to the whole of Big5. A receipt whose
every character one covers uses it (about 4 times less CPU); any other character — a name in
Greek, Cyrillic or a rare hanzi — makes it use the full font, exactly as before. The subsets are
made at the first receipt that needs one (a fraction of a second for the Latin one, about 15 s
for a CJK one), or ahead of time with `simcharge receipt-fonts` (the container image does it at
build time). When the directory cannot be written, the full fonts are used.

Chinese is drawn with the font of the receipt's script: a traditional Chinese receipt
(`zh-Hant`) with Noto Sans TC, whose glyphs follow Taiwan's and Hong Kong's standard forms,
every other receipt with Noto Sans CJK SC (mainland China's forms). A character the first lacks
is drawn with the other.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import structlog
from fontTools import subset
from fontTools.ttLib import TTFont

from simcharge.config import get_settings

log = structlog.get_logger(__name__)

SUBSETS_VERSION = 1
"""Part of each subset's file name: raised when what a subset holds changes."""
LATIN_RANGES = (
    (0x0020, 0x024F),  # Basic Latin, Latin-1, Latin Extended-A and -B
    (0x1E00, 0x1EFF),  # Latin Extended Additional (Vietnamese)
    (0x2000, 0x206F),  # General Punctuation
    (0x20A0, 0x20CF),  # Currency Symbols (₱, €, ₫ …)
    (0x2100, 0x214F),  # Letterlike Symbols
    (0x2190, 0x22FF),  # Arrows, Mathematical Operators (the minus sign)
)


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {package} package (a font of the receipts) is not installed")
    return Path(spec.origin).resolve().parent.joinpath(*parts)


@lru_cache(maxsize=1)
def font_path() -> Path:
    """DejaVu Sans, the receipts' text font."""
    return _package_file("matplotlib", "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")


@lru_cache(maxsize=1)
def cjk_font_path() -> Path:
    """Noto Sans CJK SC, the fallback for what DejaVu Sans lacks."""
    return _package_file("mplfonts", "fonts", "NotoSansCJKsc-Regular.otf")


@lru_cache(maxsize=1)
def tc_font_path() -> Path:
    """Noto Sans TC, the fallback of traditional Chinese receipts."""
    return _package_file("pylopdf_fonts_zh_tw", "NotoSansTC-Regular.otf")


@lru_cache(maxsize=8)
def covers(path: Path) -> frozenset[int]:
    """The code points a font file has glyphs for."""
    font = TTFont(str(path), lazy=True)
    try:
        return frozenset(font.getBestCmap())
    finally:
        font.close()


def _latin(available: frozenset[int]) -> list[int]:
    return sorted(c for c in available if any(lo <= c <= hi for lo, hi in LATIN_RANGES))


def _decodable(encoding: str, leads: range, trails: Iterable[int]) -> set[int]:
    """The characters of a two-byte encoding's rows `leads`."""
    trail = list(trails)
    found: set[int] = set()
    for lead in leads:
        for t in trail:
            with contextlib.suppress(UnicodeDecodeError):
                found.update(ord(ch) for ch in bytes((lead, t)).decode(encoding))
    return found


def _cjk(available: frozenset[int]) -> list[int]:
    # GB 2312: rows 0xA1–0xF7 (symbols, then the 6,763 hanzi of levels 1 and 2);
    # Big5: rows 0xA1–0xC6 (symbols and the 5,401 frequent characters).
    chars = _decodable("gb2312", range(0xA1, 0xF8), range(0xA1, 0xFF))
    chars |= _decodable("big5", range(0xA1, 0xC7), [*range(0x40, 0x7F), *range(0xA1, 0xFF)])
    return sorted(c for c in chars if c in available)


def _big5(available: frozenset[int]) -> list[int]:
    # Big5: rows 0xA1–0xF9 (symbols, the 5,401 frequent and the 7,652 less frequent characters).
    chars = _decodable("big5", range(0xA1, 0xFA), [*range(0x40, 0x7F), *range(0xA1, 0xFF)])
    return sorted(c for c in chars if c in available)


SUBSETS = {
    "latin": (font_path, _latin),
    "cjk": (cjk_font_path, _cjk),
    "cjk-tc": (tc_font_path, _big5),
}
CJK_FONTS = {"cjk": cjk_font_path, "cjk-tc": tc_font_path}
"""The CJK fonts, by the name of their common subset."""
_building = threading.Lock()


def subset_path(kind: str) -> Path:
    """Where the common subset `kind` ("latin", "cjk") is kept: named after the full font's size,
    so that another version of the font makes a new one (not its time: an image's copy keeps
    the size, not always the time)."""
    source = SUBSETS[kind][0]()
    name = f"{kind}-v{SUBSETS_VERSION}-{source.stat().st_size}{source.suffix}"
    return get_settings().font_cache_dir / name


def _make(kind: str, source: Path, chars: Callable[[frozenset[int]], list[int]]) -> Path:
    """Make the subset (in this thread) and put it in place whole."""
    target = subset_path(kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    font = TTFont(str(source), lazy=True)
    try:
        options = subset.Options()
        options.layout_features = []  # fpdf2 draws without text shaping
        options.hinting = False
        options.notdef_outline = True
        options.drop_tables += ["GSUB", "GPOS", "GDEF", "kern", "FFTM"]
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=chars(covers(source)))
        subsetter.subset(font)
        fd, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                font.save(out)
            os.chmod(temporary, 0o644)  # a font: the image's own user reads it
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    finally:
        font.close()
    log.info("receipt font subset made", kind=kind, path=str(target))
    return target


def common_subset(kind: str) -> Path | None:
    """The common subset `kind`, made first if it is not there yet; None if it cannot be
    (the directory is not writable): the full font serves."""
    target = subset_path(kind)
    if target.exists():
        return target
    with _building:  # two threads of one process make it once; two processes, each whole
        if target.exists():
            return target
        source, chars = SUBSETS[kind]
        try:
            return _make(kind, source(), chars)
        except OSError as e:
            log.warning("receipt font subset not made", kind=kind, error=str(e))
            return None


def _drawn(texts: Iterable[str]) -> set[int]:
    return {ord(ch) for text in texts for ch in text if not ch.isspace()}


def needs_cjk_font(texts: Iterable[str]) -> bool:
    """Whether any character (other than spacing) is missing from DejaVu Sans."""
    return not _drawn(texts) <= covers(font_path())


_RIGHT_TO_LEFT = frozenset({"R", "AL"})


def drawable(text: str) -> bool:
    """Whether the receipt's fonts have a glyph for every character of `text` (DejaVu Sans, then
    Noto Sans CJK SC or TC): a name in Thai, Devanagari or Baybayin would print blank."""
    drawn = _drawn([text])
    if any(unicodedata.bidirectional(chr(point)) in _RIGHT_TO_LEFT for point in drawn):
        # The glyphs exist, but the receipt is drawn left to right without the bidi algorithm:
        # Hebrew would read backwards and Arabic unjoined.
        return False
    missing = drawn - covers(font_path())
    return not missing or missing <= covers(cjk_font_path()) | covers(tc_font_path())


def fonts_for(texts: Iterable[str], language: str = "en") -> tuple[Path, list[Path]]:
    """The text font and the CJK fallbacks, in the order fpdf2 is to try them, to draw `texts`
    with: for `zh-Hant` Noto Sans TC first, else Noto Sans CJK SC first; a CJK font only when
    it draws a character the fonts before it lack. Each font is its common subset when that
    covers every character the font must draw, else the full font."""
    drawn = _drawn(texts)
    full = covers(font_path())
    text_font = font_path()
    latin = common_subset("latin")
    if latin is not None and drawn & full <= covers(latin):
        text_font = latin
    missing = drawn - full
    fallbacks: list[Path] = []
    for kind in ("cjk-tc", "cjk") if language == "zh-Hant" else ("cjk", "cjk-tc"):
        if not missing:
            break
        whole = CJK_FONTS[kind]()
        mine = missing & covers(whole)
        if not mine:
            continue
        cut = common_subset(kind)
        fallbacks.append(cut if cut is not None and mine <= covers(cut) else whole)
        missing -= mine
    return text_font, fallbacks


def make_all() -> list[Path]:
    """Make every common subset now (`simcharge receipt-fonts`)."""
    made = [common_subset(kind) for kind in SUBSETS]
    return [p for p in made if p is not None]
