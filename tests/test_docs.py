"""The generated reference docs (docs/cli.md, docs/configs.md) are what scripts/gen_docs.py makes from the
code now: a changed option or config field must come with its regenerated doc."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def generated(gen_docs):
    return gen_docs.generated()


def test_generated_docs_are_up_to_date(gen_docs, generated):
    stale = gen_docs.stale(generated)
    diffs = []
    for path in stale:
        old = path.read_text().splitlines() if path.is_file() else []
        diff = difflib.unified_diff(
            old, generated[path].splitlines(), str(path), "generated", lineterm="", n=1
        )
        diffs.append("\n".join(list(diff)[:40]))
    assert not stale, (
        f"{', '.join(gen_docs.rel(p) for p in stale)} out of date: run `python scripts/gen_docs.py`\n"
        + "\n".join(diffs)
    )


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_cli_doc_has_every_command_and_option(gen_docs, generated):
    from vidiff.cli import build_parser

    text = generated[gen_docs.CLI_DOC]
    parsers = list(_parsers(build_parser()))
    assert any(p.prog == "vidiff toyworld dataset" for p in parsers)  # nested subcommands are walked
    for parser in parsers:
        assert f"## `{parser.prog}`" in text or parser.prog == "vidiff"
        assert f"usage: {parser.prog}" in text
        for action in parser._actions:
            for flag in action.option_strings:
                assert f"{flag}" in text, (parser.prog, flag)


def test_cli_doc_does_not_depend_on_terminal_width(gen_docs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = gen_docs.render_cli()
    monkeypatch.setenv("COLUMNS", "300")
    assert gen_docs.render_cli() == narrow
    from vidiff.cli import build_parser

    usage = gen_docs.usage(next(p for p in _parsers(build_parser()) if p.prog == "vidiff eval")).splitlines()
    assert len(usage) > 1 and max(map(len, usage)) <= gen_docs.USAGE_WIDTH


def test_configs_doc_has_every_key(gen_docs, generated):
    text = generated[gen_docs.CONFIGS_DOC]
    for key in (
        "train.optim.lr",
        "stage.denoiser.unet.text_dim",
        "stage.sampling.cfg",
        "text.model_name",
        "model.latent_channels",
        "analysis.cuts.window",
        "clips.max_seconds",
        "raw_videos",
        "stages",
    ):
        assert f"| `{key}` |" in text, key
    assert "](../configs/toy/base_unet.yaml)" in text and "](../configs/curation.yaml)" in text
    assert str(ROOT) not in text  # paths in defaults are shown relative to the checkout


# fmt: off
@dataclasses.dataclass
class _Commented:
    """A class for the comment reader."""

    a: int = 1  # after the field
    # above the field,
    # two lines
    b: int = 2
    c: str = "x"  # a trailing comment
                  # continued below it
    d: float = 0.5
    # group header
    e: int = 3  # the trailing comment wins
# fmt: on


def test_field_comments_are_read_from_the_source(gen_docs):
    assert gen_docs.field_comments(_Commented) == {
        "a": "after the field",
        "b": "above the field, two lines",
        "c": "a trailing comment continued below it",
        "d": "",
        "e": "the trailing comment wins",
    }
    assert gen_docs.class_docstring(_Commented) == "A class for the comment reader."
