"""Moments in the reader's time zone (`kit.moments`) and the regional formats an account may
choose (`kit.i18n.regional_format`, `chosen_format`).

What was missing: accounts had no time zone, so every time was written in UTC and every date
was UTC's ("Dec 6" for a validity ending 2026-12-06T20:00Z, Dec 7 in Manila)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from simcharge.kit.i18n import chosen_format, regional_format
from simcharge.kit.moments import day_in, is_zone, moment_text, zone

END = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)


def plain(text: str) -> str:
    return text.replace("\u202f", " ")


def test_a_time_is_written_in_the_readers_zone_on_that_zones_day() -> None:
    assert plain(moment_text("en", END, None, "Asia/Manila")) == (
        "Dec 7, 2026, 4:00:00 AM UTC+08:00"
    )
    assert plain(moment_text("en", END)) == "Dec 6, 2026, 8:00:00 PM UTC"
    assert moment_text("zh-Hans", END, None, "Asia/Shanghai") == "2026年12月7日 04:00:00 UTC+08:00"


def test_daylight_saving_time_moves_the_offset() -> None:
    winter = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 17, 0, tzinfo=UTC)
    ny = "America/New_York"
    assert plain(moment_text("en", winter, None, ny)).endswith("12:00:00 PM UTC−05:00")
    assert plain(moment_text("en", summer, None, ny)).endswith("1:00:00 PM UTC−04:00")
    # the hour that does not exist in New York (2026-03-08 02:00–03:00) is never written
    jump = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert plain(moment_text("en", jump, None, ny)).endswith("3:00:00 AM UTC−04:00")
    assert plain(moment_text("en", jump - timedelta(seconds=1), None, ny)).endswith(
        "1:59:59 AM UTC−05:00"
    )


def test_the_same_instant_reads_the_same_whatever_offset_it_came_with() -> None:
    shanghai = END.astimezone(timezone(timedelta(hours=8)))
    assert moment_text("es", shanghai, None, "Europe/Madrid") == moment_text(
        "es", END, None, "Europe/Madrid"
    )
    assert moment_text("es", END, None, "Europe/Madrid") == "6 dic 2026, 21:00:00 UTC+01:00"


def test_a_regional_format_writes_the_readers_way() -> None:
    assert plain(moment_text("es", END, "es_MX", "America/Mexico_City")) == (
        "6 dic 2026, 2:00:00 p.m. UTC−06:00"
    )


def test_the_cache_keeps_zones_apart() -> None:
    moment_text.cache_clear()
    manila = moment_text("en", END, None, "Asia/Manila")
    utc = moment_text("en", END, None, "UTC")
    assert manila != utc
    assert moment_text("en", END, None, "Asia/Manila") is manila  # remembered
    assert moment_text.cache_info().hits == 1


def test_a_moments_day_is_its_day_in_the_zone_and_a_date_stays_itself() -> None:
    assert day_in(END, "Asia/Manila") == date(2026, 12, 7)
    assert day_in(END, "America/Los_Angeles") == date(2026, 12, 6)
    assert day_in(date(2026, 12, 6), "Pacific/Kiritimati") == date(2026, 12, 6)


@pytest.mark.parametrize("name", ["Asia/Manila", "America/Argentina/Buenos_Aires", "UTC"])
def test_known_zones(name: str) -> None:
    assert is_zone(name)
    assert zone(name).key == name


@pytest.mark.parametrize(
    "name", [None, "", "PST", "Mars/Olympus_Mons", "../../etc/passwd", "asia/manila", "posix/UTC",
             "Asia/Manila\x00", " Asia/Manila"],
)
def test_unknown_zones_are_refused_and_never_raise(name: str | None) -> None:
    assert not is_zone(name)
    if name is not None:
        assert zone(name).key == "UTC"  # a stored name the database dropped: UTC, no error


@pytest.mark.parametrize(
    ("given", "stored"),
    [("es_MX", "es_MX"), ("es-mx", "es_MX"), ("es_419", "es_419"), ("ES_es", "es_ES"),
     ("es_PH", "es_419")],  # Babel's es_PH writes Spain's comma; the Philippines write a point
)
def test_regional_formats_an_account_may_choose(given: str, stored: str) -> None:
    assert regional_format(given) == stored


@pytest.mark.parametrize(
    "given", [None, "", "es", "en_US", "zh_Hans_CN", "es_ZZ", "es_MX_x", "es_MEX", "fil_PH",
              "es_" + "M" * 40],
)
def test_other_formats_are_refused(given: str | None) -> None:
    assert regional_format(given) is None


def test_a_chosen_format_holds_for_its_own_language_only() -> None:
    assert chosen_format("es", "es_MX") == "es_MX"
    assert chosen_format("en", "es_MX") is None
    assert chosen_format("es", None) is None


def test_the_back_office_writes_times_in_the_operators_zone() -> None:
    from simcharge.backoffice.web import environment

    when = environment("en", "Asia/Manila").filters["when"]
    assert plain(when(END)) == "Dec 7, 2026, 4:00:00 AM UTC+08:00"
    assert environment("en").filters["when"](None) == "—"


# --- one short form of the zone, in every language ---------------------------------------------
#
# Before, Babel wrote the zone as the locale happened to have it: "CET" in Spain's Spanish but
# "hora estándar de Europa central" in Mexico's, "CST" for Mexico City in English (and for
# Shanghai in China's usage) but "-0600" in Spanish, "+0800" in the middle of a Chinese date
# ("2026年12月7日 +0800 04:00:00"), "[+0800]" in Traditional Chinese. Now: the offset from UTC,
# after the time, the same way in every language.

WINTER = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
SUMMER = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
OFFSETS = {
    # zone: (winter, summer) — Mexico City keeps no summer time since 2022; China, Taiwan and
    # the Philippines none at all.
    "Europe/Madrid": ("UTC+01:00", "UTC+02:00"),
    "Asia/Manila": ("UTC+08:00", "UTC+08:00"),
    "America/Mexico_City": ("UTC−06:00", "UTC−06:00"),
    "Asia/Shanghai": ("UTC+08:00", "UTC+08:00"),
    "Asia/Taipei": ("UTC+08:00", "UTC+08:00"),
    "UTC": ("UTC", "UTC"),
}
WRITTEN = {
    # (language, locale): (Madrid in winter, Manila in summer), in full
    ("en", None): ("Jan 15, 2026, 1:00:00 PM UTC+01:00", "Jul 15, 2026, 8:00:00 PM UTC+08:00"),
    ("es", None): ("15 ene 2026, 13:00:00 UTC+01:00", "15 jul 2026, 20:00:00 UTC+08:00"),
    ("es", "es_MX"): (
        "15 ene 2026, 1:00:00 p.m. UTC+01:00", "15 jul 2026, 8:00:00 p.m. UTC+08:00"
    ),
    ("fil", None): ("Ene 15, 2026, 1:00:00 PM UTC+01:00", "Hul 15, 2026, 8:00:00 PM UTC+08:00"),
    ("zh-Hans", None): ("2026年1月15日 13:00:00 UTC+01:00", "2026年7月15日 20:00:00 UTC+08:00"),
    ("zh-Hant", None): (
        "2026年1月15日 下午1:00:00 UTC+01:00", "2026年7月15日 晚上8:00:00 UTC+08:00"
    ),
}


@pytest.mark.parametrize(("language", "locale"), list(WRITTEN))
def test_each_language_writes_the_zone_as_its_offset_after_the_time(
    language: str, locale: str | None
) -> None:
    madrid, manila = WRITTEN[(language, locale)]
    assert plain(moment_text(language, WINTER, locale, "Europe/Madrid")) == madrid
    assert plain(moment_text(language, SUMMER, locale, "Asia/Manila")) == manila
    for name, (winter, summer) in OFFSETS.items():
        for when, offset in ((WINTER, winter), (SUMMER, summer)):
            text = plain(moment_text(language, when, locale, name))
            assert text.endswith(f" {offset}"), (name, text)
            # Nothing else of a zone's name: no abbreviation, no words, no brackets.
            rest = text.removesuffix(offset)
            for word in ("CET", "CST", "PST", "GMT", "UTC", "hora", "[", "+0", "−0", "-0"):
                assert word not in rest, (name, text)


@pytest.mark.parametrize(("language", "locale"), list(WRITTEN))
def test_around_madrids_change_of_time_the_offset_moves_with_it(
    language: str, locale: str | None
) -> None:
    """Summer time in Madrid starts 2026-03-29 at 01:00 UTC (02:00 becomes 03:00) and ends
    2026-10-25 at 01:00 UTC (03:00 becomes 02:00, which happens twice)."""
    spring = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    autumn = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    second = timedelta(seconds=1)

    def madrid(when: datetime) -> str:
        return plain(moment_text(language, when, locale, "Europe/Madrid"))

    assert madrid(spring - second).endswith("UTC+01:00") and "59:59" in madrid(spring - second)
    assert madrid(spring).endswith("UTC+02:00") and "3:00:00" in madrid(spring)
    # The hour that happens twice reads twice the same on the clock, told apart by the offset.
    first, again = madrid(autumn - second), madrid(autumn + timedelta(hours=1) - second)
    assert first.endswith("UTC+02:00") and again.endswith("UTC+01:00")
    assert first.removesuffix("UTC+02:00") == again.removesuffix("UTC+01:00")


def test_the_offset_is_the_one_the_zone_list_shows() -> None:
    """The portal's list of zones labels Manila "Manila (UTC+08:00)": a time then reads with
    the very offset the customer chose by."""
    from simcharge.portal.profile import zone_choice

    for name in ("Asia/Manila", "America/Mexico_City", "Asia/Kolkata"):
        label = zone_choice(name, "en", WINTER).label
        assert label.endswith(f"({moment_text('en', WINTER, None, name).rsplit(' ', 1)[1]})")
