"""babel.cfg finds the strings of every template: each template parses with exactly the
extensions babel.cfg names for it, a template with `_(` gives messages, and the extensions of
each Jinja environment the app renders with are named there (the top-up page used `{% do %}`,
babel's parser did not know the tag and dropped the page's strings without a word)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.frontend import parse_mapping_cfg
from babel.util import pathmatch
from jinja2 import Environment
from jinja2.ext import Extension
from jinja2.utils import import_string

from simcharge.backoffice.web import environment as backoffice_environment
from simcharge.notifications.templates import environment as notifications_environment
from simcharge.payments.endpoints import _pages as payments_environment
from simcharge.portal.web import _FoldedGettext
from simcharge.portal.web import environment as portal_environment

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "simcharge"
BABEL_CFG = ROOT / "babel.cfg"
# The Makefile's `-k` flags, on top of babel's own keywords.
KEYWORDS: dict[str, Any] = {
    **DEFAULT_KEYWORDS, "N_": None, "translate": (2,), "translate_plural": (2, 3)
}
TEMPLATES = sorted(
    p for p in PACKAGE.glob("*/templates/**/*") if p.is_file() and p.suffix in {".html", ".jinja"}
)


def mapping() -> tuple[list[tuple[str, str]], dict[str, dict[str, str]]]:
    """babel.cfg's (pattern, method) list and each pattern's options, as `pybabel extract`
    reads them."""
    with BABEL_CFG.open(encoding="utf-8") as fh:
        return parse_mapping_cfg(fh, str(BABEL_CFG))


def method_of(relative: str) -> tuple[str, dict[str, str]]:
    """The method and options babel.cfg gives a file (relative to src/simcharge): the first
    pattern that matches, as babel does."""
    methods, options = mapping()
    for pattern, method in methods:
        if pathmatch(pattern, relative):
            return method, options.get(pattern, {})
    raise AssertionError(f"babel.cfg does not extract {relative}")


def cfg_extensions(options: dict[str, str]) -> set[type[Extension]]:
    names = [n.strip() for n in options.get("extensions", "").split(",") if n.strip()]
    return {import_string(n) for n in names}


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_the_templates_are_found() -> None:
    dirs = {p.relative_to(PACKAGE).parts[0] for p in TEMPLATES}
    assert {"portal", "backoffice", "notifications", "payments"} <= dirs
    assert any(p.name == "topup.html" for p in TEMPLATES)


@pytest.mark.parametrize("path", TEMPLATES, ids=_rel)
def test_each_template_parses_with_the_cfg_extensions(path: Path) -> None:
    method, options = method_of(_rel(path))
    assert method == "jinja2", f"{_rel(path)} is extracted with {method}, not jinja2"
    # Never silent: babel's extractor skips a template it cannot parse unless told otherwise.
    assert options.get("silent", "").lower() in {"false", "0", "off", "no"}
    env = Environment(extensions=list(cfg_extensions(options)))  # noqa: S701 - parsing only
    env.parse(path.read_text(encoding="utf-8"), name=path.name)


@pytest.mark.parametrize(
    "path", [p for p in TEMPLATES if "_(" in p.read_text(encoding="utf-8")], ids=_rel
)
def test_each_template_with_strings_gives_messages(path: Path) -> None:
    method, options = method_of(_rel(path))
    messages = list(extract_from_file(method, str(path), KEYWORDS, options=options))
    assert messages, f"babel finds no message in {_rel(path)}"


def test_the_top_up_page_strings_are_extracted() -> None:
    """The strings the walkthrough found in English on the Spanish and Chinese top-up page."""
    method, options = method_of("portal/templates/topup.html")
    found = {m[1] for m in extract_from_file(method, str(PACKAGE / "portal/templates/topup.html"),
                                             KEYWORDS, options=options)}
    assert {"1. Which line?", "Another number (a gift)", "Number to top up, with country code",
            "2. Which package?", "3. How do you pay?", "See the price"} <= found


def _syntax_extensions(env: Environment) -> set[type[Extension]]:
    """An environment's extensions that change what a template may say: _FoldedGettext only
    rewrites `_()` calls at compile time (and would hide them from the extractor)."""
    return {type(e) for e in env.extensions.values()} - {_FoldedGettext}


@pytest.mark.parametrize(
    ("sample", "env"),
    [
        ("portal/templates/topup.html", lambda: portal_environment("en")),
        ("backoffice/templates/home.html", lambda: backoffice_environment("en")),
        ("notifications/templates/balance.low.jinja", lambda: notifications_environment("en")),
        ("notifications/templates/_layout.html",
         lambda: notifications_environment("en", html=True)),
        ("payments/templates/sandbox.html", lambda: payments_environment),
    ],
)
def test_the_cfg_names_the_extensions_each_environment_loads(sample: str, env: Any) -> None:
    """A tag the app's environment allows is a tag babel must parse: a new extension in an
    environment is a new line in babel.cfg."""
    environment: Environment = env()
    _, options = method_of(sample)
    missing = _syntax_extensions(environment) - cfg_extensions(options)
    assert not missing, f"babel.cfg does not load {missing} for {sample}"
    # The same whitespace rules, so a {% trans %} block's text is the msgid the page looks up.
    for option in ("trim_blocks", "lstrip_blocks"):
        if getattr(environment, option):
            assert options.get(option, "").lower() in {"true", "1", "on", "yes"}, option


def test_a_template_babel_cannot_parse_fails_the_extraction(tmp_path: Path) -> None:
    """What babel.cfg's `silent = false` buys: the old config lost topup.html's strings with
    no error; now an unknown tag stops the extraction."""
    page = tmp_path / "page.html"
    page.write_text('{% do x.append(1) %}{{ _("Hello") }}', encoding="utf-8")
    quiet = list(extract_from_file("jinja2", str(page), KEYWORDS,
                                   options={"extensions": "jinja2.ext.i18n"}))
    assert quiet == []  # the silent default: nothing, and no error
    bad = page.with_name("bad.html")
    bad.write_text('{% frobnicate %}{{ _("Hello") }}', encoding="utf-8")
    _, options = method_of("portal/templates/bad.html")
    with pytest.raises(Exception, match="frobnicate"):
        list(extract_from_file("jinja2", str(bad), KEYWORDS, options=options))
    assert [m[1] for m in extract_from_file("jinja2", str(page), KEYWORDS, options=options)] == [
        "Hello"
    ]
