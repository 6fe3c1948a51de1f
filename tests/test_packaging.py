"""pyproject.toml: every dependency's range is pinned at both ends, and listed once."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
)
GROUPS = {
    "dependencies": PYPROJECT["project"]["dependencies"],
    **{
        f"optional-dependencies.{name}": specs
        for name, specs in PYPROJECT["project"]["optional-dependencies"].items()
    },
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_dependency_has_a_lower_and_an_upper_bound(group: str) -> None:
    for spec in GROUPS[group]:
        requirement = Requirement(spec)
        operators = {s.operator for s in requirement.specifier}
        assert operators & {">=", ">", "~=", "=="}, f"{group}: {spec} has no lower bound"
        assert operators & {"<", "<=", "~=", "=="}, f"{group}: {spec} has no upper bound"


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_dependency_is_listed_once(group: str) -> None:
    names = [Requirement(spec).name.lower() for spec in GROUPS[group]]
    assert sorted(names) == sorted(set(names)), f"{group} lists a package twice"
