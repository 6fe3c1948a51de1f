"""`SIMCHARGE_CHARGING_RATING_GROUPS` (sixteenth review round): a rating group listed twice
(`100=voice,100=data`) was accepted — the last one won, silently — and so was one beyond an Nchf
`RatingGroup` (Uint32: `4294967296=data`), which no request can carry. Both stop the start-up
now, with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from simcharge.config import Settings, settings_problems


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SIMCHARGE_{name.upper()}", raising=False)


def make(groups: str) -> Settings:
    return Settings(_env_file=None, charging_rating_groups=groups)


def problems(groups: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        make(groups)
    return settings_problems(caught.value)


@pytest.mark.parametrize(
    ("groups", "said"),
    [
        ("100=voice,100=data", "rating group 100 is listed twice (voice and data); list each once"),
        ("100=voice, 0100 = sms", "rating group 100 is listed twice (voice and sms); list each once"),
        ("100=voice,100=voice", "rating group 100 is listed twice (voice and voice); list each once"),
        ("4294967296=data", "rating group 4294967296 is out of range (a rating group is 0 to "
         "4294967295)"),
        ("100=voice," + "9" * 30 + "=sms", "rating group 99999999999999999999… is out of range "
         "(a rating group is 0 to 4294967295)"),
        ("\u0661\u0660\u0660=voice", "rating group \u0661\u0660\u0660 is out of range (a rating "
         "group is 0 to 4294967295)"),
    ],
)
def test_a_group_twice_or_beyond_uint32_stops_the_start(groups: str, said: str) -> None:
    assert problems(groups) == [f"SIMCHARGE_CHARGING_RATING_GROUPS: {said}"]


@pytest.mark.parametrize("groups", ["100=voice,200=data,300=sms", "0=sms, 4294967295 = data",
                                    "00042=voice"])  # fmt: skip
def test_each_group_once_within_uint32_is_accepted(groups: str) -> None:
    s = make(groups)
    assert len(s.rating_groups) == len(groups.split(","))
    assert all(0 <= g <= 2**32 - 1 for g in s.rating_groups)


def test_the_default_is_accepted() -> None:
    assert Settings(_env_file=None).rating_groups == {
        100: "voice", 200: "data", 300: "sms"
    }


def test_a_bad_form_is_still_refused_by_its_pattern() -> None:
    [problem] = problems("100=video")
    assert problem.startswith("SIMCHARGE_CHARGING_RATING_GROUPS: String should match pattern")


def test_the_command_says_so_in_one_line(tmp_path: Path) -> None:
    """As an operator sees it: `simcharge …` exits 2 with the variable and what is wrong."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCHARGE_")}
    env["SIMCHARGE_CHARGING_RATING_GROUPS"] = "100=voice,200=data,100=data"
    script = Path(sys.executable).with_name("simcharge")
    done = subprocess.run(
        [str(script), "db", "current"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "simcharge: cannot start: SIMCHARGE_CHARGING_RATING_GROUPS: rating group 100 is listed "
        "twice (voice and data); list each once"
    ]
