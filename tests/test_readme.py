"""Every command the README shows runs as written, in order, at toy size (step counts are overridden
where a real run would take minutes); blocks that need third-party weights are parsed, not run."""

import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Appended to a command so it runs in seconds; the command itself stays as the README writes it.
TOY_SIZE = {
    "train-vae": ["train.steps=2", "data.num_samples=8", "eval.num_samples=2", "train.checkpoint_every=1",
                  "eval.real_clips=false"],
    "train": ["train.max_steps=2", "train.steps_per_epoch=2", "train.batch_size=4", "train.image_batch_size=4",
              "stage.sampling.steps=2", "train.compile=false"],
}
PICTURE = "picture.png"  # the user's image in the README's `vidiff animate`: a toy-world still stands in for it
INSTALL_AND_DEMO = ("pip install", "vidiff demo")  # the two first commands: CI and the slow demo test run them


def readme_blocks() -> list[tuple[str, str, bool]]:
    """(language, code, needs_weights) for every fenced block, in order."""
    text = README.read_text()
    out = []
    for m in re.finditer(r"(<!-- needs-weights -->\n)?```(\w+)\n(.*?)```", text, flags=re.S):
        out.append((m.group(2), m.group(3), m.group(1) is not None))
    return out


def commands(code: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_shows_the_uses_it_promises():
    shown = [c for lang, code, _ in readme_blocks() if lang == "bash" for c in commands(code)]
    for sub in ("curate", "train-vae", "encode", "train", "generate", "animate", "eval"):
        assert any(shlex.split(c)[:2] == ["vidiff", sub] for c in shown), f"the README shows no `vidiff {sub}`"


def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    from vidiff.cli import build_parser, main
    from vidiff.video import probe_video

    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    write_still(tmp_path / PICTURE)
    ran = []
    for lang, code, needs_weights in readme_blocks():
        if lang == "python":
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
            ran.append("python example")
            continue
        for command in commands(code):
            argv = shlex.split(command)
            if command.startswith(INSTALL_AND_DEMO) or argv[0] != "vidiff":
                continue
            if needs_weights:  # the files are the user's: check the command parses, with its options
                build_parser().parse_args(argv[1:])
                continue
            argv += TOY_SIZE.get(argv[1], [])
            assert main(argv[1:]) == 0, f"README command failed: {command}\n{capsys.readouterr().err[-2000:]}"
            ran.append(argv[1])
    assert ran == ["toyworld", "curate", "train-vae", "train-vae", "encode", "train", "toyworld", "curate-images",
                   "encode", "train", "generate", "encode", "train", "encode", "train", "cascade", "generate", "train",
                   "animate", "eval", "python example"]
    assert (tmp_path / "gen" / "0000.mp4").is_file() and (tmp_path / "out.mp4").is_file()
    assert probe_video(tmp_path / "gen_cascade" / "0000.mp4").num_frames == 17  # base, TSR, SSR
    assert probe_video(tmp_path / "anim" / "0000.mp4").num_frames == 9


def write_still(path: Path) -> None:
    from PIL import Image

    from vidiff.toyworld import SceneSpec
    from vidiff.toyworld.world import render_frames

    frame = render_frames(SceneSpec("red", "circle", "left", x=0.6), 1, 48, 64)[0]
    Image.fromarray(frame.round().astype("uint8")).save(path)


@pytest.mark.skipif(shutil.which("vidiff") is None, reason="the vidiff entry point is not installed")
def test_the_demo_command_exists():
    from vidiff.cli import build_parser

    build_parser().parse_args(["demo", "--out", "x"])
