"""The copies of the official specifications kept in the repository are the team's files,
unchanged (checked wherever the team's `shared/specs` sits beside the checkout)."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared/specs"
COPIES = {
    "3gpp-rel17": ROOT / "tests/specs/3gpp-rel17",
    "tmf654": ROOT / "src/simcharge/tmf654/spec",
}


@pytest.mark.parametrize("folder", sorted(COPIES))
def test_the_copies_are_the_official_files(folder: str) -> None:
    copy = COPIES[folder]
    assert any(copy.iterdir())
    original = SHARED / folder
    if not original.is_dir():
        pytest.skip("no shared/specs beside this checkout")
    for source in original.iterdir():
        if source.suffix in {".yaml", ".json"}:
            assert filecmp.cmp(source, copy / source.name, shallow=False), source.name
