"""Every text a customer reads exists in every language, and the catalogs are current."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from simcharge.errors import registered_problem_types
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.translations import CATALOG_DIRS, LOCALES_DIR, translate
from simcharge.notifications.templates import render, template_names
from tests.test_templates_extract import mapping

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "simcharge"
KEYWORDS = {
    "N_": None,
    "translate": (2,),
    "translate_plural": (2, 3),
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
}
PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s|%%")


def _pot_ids() -> set[str | tuple[str, str]]:
    """The messages of the template catalog: a text, or (singular, plural)."""
    with (LOCALES_DIR / "messages.pot").open("rb") as fh:
        return {m.id for m in read_po(fh) if m.id}


def test_the_template_catalog_is_up_to_date() -> None:
    # babel.cfg's own mapping, as `make messages` reads it: a copy here once lacked the
    # portal's `jinja2.ext.do`, and the test agreed with the catalog that lost topup.html.
    method_map, options = mapping()
    found = {
        message if isinstance(message, str) else message[0] if len(message) == 1
        else (message[0], message[1])
        for _, _, message, _, _ in extract_from_dir(str(PACKAGE), method_map, options, KEYWORDS)
    }
    pot = _pot_ids()
    assert found - pot == set(), "run `make messages`: strings missing from messages.pot"
    assert pot - found == set(), "run `make messages`: messages.pot has strings no longer used"


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_every_catalog_translates_everything(language: str) -> None:
    path = LOCALES_DIR / CATALOG_DIRS[language] / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        catalog = read_po(fh)
    entries = {m.id: m for m in catalog if m.id}
    assert set(entries) == _pot_ids()
    for msgid, m in entries.items():
        assert "fuzzy" not in m.flags, f"{language}: fuzzy {msgid!r}"
        if isinstance(msgid, tuple):
            # A plural: the catalog's number of forms (its Plural-Forms header), each written;
            # the last ("other") says all the plural says, another may leave the number out.
            forms = m.string
            assert isinstance(forms, tuple) and len(forms) == catalog.num_plurals, (
                f"{language}: {catalog.num_plurals} plural forms needed for {msgid!r}"
            )
            assert all(f.strip() for f in forms), f"{language}: untranslated {msgid!r}"
            plural = sorted(PLACEHOLDER.findall(msgid[1]))
            assert sorted(PLACEHOLDER.findall(forms[-1])) == plural, (
                f"{language}: placeholders differ in {msgid!r}"
            )
            assert all(set(PLACEHOLDER.findall(f)) <= set(plural) for f in forms)
            assert forms[-1] != msgid[1], f"{language}: copied, not translated: {msgid!r}"
            continue
        assert isinstance(m.string, str) and m.string.strip(), f"{language}: untranslated {msgid!r}"
        assert sorted(PLACEHOLDER.findall(m.string)) == sorted(PLACEHOLDER.findall(msgid)), (
            f"{language}: placeholders differ in {msgid!r}"
        )
        assert m.string != msgid or len(msgid) < 12, (
            f"{language}: copied, not translated: {msgid!r}"
        )


def test_every_problem_title_is_translatable() -> None:
    pot = _pot_ids()
    for slug, cls in registered_problem_types().items():
        assert cls.title in pot, f"{slug}: mark its title with N_()"


def test_translations_are_used() -> None:
    assert translate("zh-Hans", "Nothing was found here.") == "此处没有内容。"
    assert translate("es", "Please sign in.") == "Inicia sesión."
    assert translate("en", "Please sign in.") == "Please sign in."


SAMPLE = {
    "operator": "simcharge",
    "base_url": "https://top.example",
    "code": "123456",
    "minutes": 10,
    "username": "maria",
    "msisdn": "+14155550101",
    "balance": 125,
    "currency": "USD",
    "remaining": 104857600,
    "unit": "DATA_B",
    "expires_at": "2026-12-01",
    "days_left": 7,
    "validity_end": "2026-12-01",
    "grace_ends": "2026-12-15",
    "freeze_on": "2027-01-01",
    "terminate_on": "2027-03-01",
    "kind": "email",
    "new": "m***@example.com",
    "device": "Firefox",
    "ip": "203.0.113.9",
    "time": "2026-11-25T10:00:00+00:00",
    "count": 5,
    "plan": {"en": "Traveller", "zh-Hans": "旅行套餐", "zh-Hant": "旅行方案", "fil": "Manlalakbay",
             "es": "Viajero"},
    "total": 2119,
    "amount": 1000,
    "receipt": "R2026-000042",
    "ticket": "T-4K7Q2M9X",
    "subject": "I paid but got nothing",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", template_names())
def test_every_template_renders_in_every_language(name: str, language: str) -> None:
    message = render(name, language, SAMPLE)
    assert message.subject and (message.text or message.sms)
    if language != "en":
        english = render(name, "en", SAMPLE)
        assert message.subject != english.subject
    assert "%(" not in message.text + message.sms + message.subject


# How each language writes "1 day" and "7 days" in the lifecycle warnings.
DAYS = {
    "en": ("(1 day)", "(7 days)"),
    "es": ("1 día)", "7 días)"),
    "fil": ("(1 araw)", "(7 araw)"),
    "zh-Hans": ("1 天", "7 天"),
    "zh-Hant": ("1 天", "7 天"),
}
WARNINGS = (
    "line.validity_ending",
    "line.freeze_warning",
    "line.grace_ending",
    "line.termination_warning",
)


def gsm_plain(text: str) -> str:
    """`text` without its accents, as an SMS may spell it."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", WARNINGS)
def test_a_warning_counts_its_days_in_the_readers_grammar(name: str, language: str) -> None:
    one, seven = DAYS[language]
    for days, expected in ((1, one), (7, seven)):
        message = render(name, language, {**SAMPLE, "days_left": days})
        for block in (message.text, message.html):
            assert expected in block, (days, block)
        # The SMS may drop its accents where that saves a segment (`notifications.sms`).
        assert gsm_plain(expected) in gsm_plain(message.sms), (days, message.sms)
        written = message.text + message.html + message.sms
        assert "1 days" not in written and "1 días" not in written


@pytest.mark.parametrize(
    ("remaining", "unit", "left"),
    [
        (1, "SMS", "te queda 1 SMS"),
        (5, "SMS", "te quedan 5 SMS"),
        (1024**3, "DATA_B", "te queda 1 GB"),
        (1536 * 1024**2, "DATA_B", "te quedan 1,5 GB"),
        (60, "VOICE_S", "te queda 1 min"),
    ],
)
def test_what_is_left_of_an_allowance_agrees_with_its_number(
    remaining: int, unit: str, left: str
) -> None:
    message = render("bucket.used_80", "es", {**SAMPLE, "remaining": remaining, "unit": unit})
    for block in (message.text, message.html, message.sms):
        assert left in block, block


def test_a_language_we_do_not_speak_falls_back_to_the_operators() -> None:
    """`SIMCHARGE_DEFAULT_LANGUAGE`, passed by the jobs that send; English if it is not ours."""
    spanish = render("account.welcome", "es", SAMPLE).subject
    assert render("account.welcome", "de", SAMPLE, default="es").subject == spanish
    english = render("account.welcome", "en", SAMPLE).subject
    assert render("account.welcome", "de", SAMPLE, default="xx").subject == english
    assert render("account.welcome", "de", SAMPLE).subject == english


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_portals_gettext_gives_what_jinjas_own_gives(language: str) -> None:
    """The portal's templates call a lighter `_()` than Jinja's newstyle gettext: it must read
    the same in every language — translated, variables escaped, "%%" as "%"."""
    from jinja2 import Environment

    from simcharge.kit.translations import translations
    from simcharge.portal.web import environment

    reference = Environment(autoescape=True, extensions=["jinja2.ext.i18n"])
    reference.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    source = (
        '{{ _("My lines") }}|{{ _("Hello, %(name)s", name=who) }}|'
        '{{ _("%(left)s left of %(total)s", left=who, total="5 GB") }}|'
        '{{ _("No such message: 100%% of <b>nothing</b>") }}|{{ _("Balance") }}|'
        '{{ _("%(count)d of %(total)s", count=n, total=who) }}|{{ _("Balance")|length }}'
    )
    values = {"who": '<script>alert("x")</script> & Co', "n": 3}
    ours = environment(language).from_string(source).render(values)
    assert ours == reference.from_string(source).render(values)
    assert "3 of &lt;script&gt;" in ours  # a field other than %(name)s: Markup's own formatting
    # The messages without variables are the template's own text, compiled in; the three with
    # variables are called as a filter (directly), only the one under a filter as a function.
    code = environment(language).compile(source, raw=True)
    assert code.count("context.call(") == 1, code
    assert "filters['gettext']" in code, code
    assert "&lt;script&gt;" in ours and "<script>" not in ours
    assert "100% of <b>nothing</b>" in ours  # the message itself is markup, as in Jinja
    if language != "en":
        assert translate(language, "My lines") in ours and "My lines" not in ours


def test_a_notices_title_is_its_subject_and_is_remembered_per_language_and_operator() -> None:
    import uuid

    from simcharge.notifications import templates

    notice = uuid.uuid4()
    params = {"username": "dora"}
    for language in LANGUAGES:
        expected = render("account.welcome", language, {"operator": "Op Mobile",
                                                        "base_url": "http://x", **params}).subject
        first = templates.notice_title(notice, "account.welcome", language, params,
                                       operator="Op Mobile", base_url="http://x")
        assert first == expected and "Op Mobile" in first
        assert (notice, language, "Op Mobile", "http://x") in templates._TITLES
        again = templates.notice_title(notice, "line.frozen", language, {"changed": "ignored"},
                                       operator="Op Mobile", base_url="http://x")
        assert again == first  # remembered: a stored notice never changes
    other = templates.notice_title(notice, "account.welcome", "en", params,
                                   operator="Other Mobile", base_url="http://x")
    assert "Other Mobile" in other and "Op Mobile" not in other
