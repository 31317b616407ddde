"""pyproject.toml's dependency ranges and the exact set CI installs (constraints/ci.txt) agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints" / "ci.txt"


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    items = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in items]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert not req.extras and not req.marker and len(specs) == 1 and specs[0].operator == "==", (
            f"{CONSTRAINTS.name}:{n}: {line!r} is not a plain `name==version` pin (pip constraints allow no extras)"
        )
        name = canonicalize_name(req.name)
        assert name not in pins, f"{CONSTRAINTS.name}:{n}: {req.name} is pinned twice"
        assert name != "vidiff", "constraints cannot hold the package itself"
        pins[name] = Version(specs[0].version)
    return pins


def test_every_dependency_is_pinned_inside_its_range():
    pins = _pins()
    for req in _requirements() + _requirements("dev"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) has no pin in constraints/ci.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints/ci.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_torch_and_torchvision_are_ranges_of_matching_pairs():
    reqs = {canonicalize_name(r.name): r for r in _requirements()}
    torch, vision = reqs["torch"], reqs["torchvision"]
    for req in (torch, vision):
        ops = {s.operator for s in req.specifier}
        assert ops == {">=", "<"}, f"pyproject.toml: {req} should be a range (>=low,<high), not {ops}"

    def bounds(req):
        return {s.operator: Version(s.version) for s in req.specifier}

    # torchvision 0.(N+15) pairs with torch 2.N: both ranges must span the same torch releases
    t, v = bounds(torch), bounds(vision)
    for op in (">=", "<"):
        assert (t[op].major, v[op].major) == (2, 0)
        assert v[op].minor == t[op].minor + 15, f"{torch} and {vision} do not span the same pairs"
    pins = _pins()
    pinned_torch, pinned_vision = pins["torch"], pins["torchvision"]
    assert torch.specifier.contains(pinned_torch) and vision.specifier.contains(pinned_vision)
    assert pinned_vision.minor == pinned_torch.minor + 15, (
        f"constraints/ci.txt pins torch {pinned_torch} with torchvision {pinned_vision}, not a matching pair"
    )
