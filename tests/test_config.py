"""The typed config loader: YAML + dotted overrides onto dataclasses, with clear errors."""

from dataclasses import dataclass, field

import pytest

from vidiff.config import load_config, save_config
from vidiff.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Train:
    steps: int = 10
    name: str = "toy"
    ema: bool = True
    widths: list[int] = field(default_factory=lambda: [32, 64])
    optim: Optim = field(default_factory=Optim)
    resume: str | None = None


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.01\n")
    cfg = load_config(Train, path, ["optim.lr=1e-4", "widths=[8,16,32]", "ema=false", "resume=ckpt/last"])
    assert cfg.steps == 5
    assert cfg.optim.lr == pytest.approx(1e-4)  # YAML reads "1e-4" as a string; the loader makes it a float
    assert cfg.widths == [8, 16, 32]
    assert cfg.ema is False
    assert cfg.resume == "ckpt/last"
    assert cfg.optim.betas == (0.9, 0.999)


def test_round_trip(tmp_path):
    cfg = load_config(Train, None, ["steps=7", "optim.betas=[0.5,0.6]"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Train, tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["stepz=3"], "unknown key(s) stepz"),
        (["optim.momentum=3"], "valid keys: betas, lr"),
        (["steps=many"], "expected an integer"),
        (["ema=maybe"], "expected true or false"),
        (["steps"], "must look like key=value"),
        (["optim.betas=[1,2,3]"], "expected 2 values"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config(Train, None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Train, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Train, bad)
