"""Dependency direction: data_tools may use vidiff, but vidiff's library never imports data_tools.

Only the entry points that run a curation job (the CLI, the demo, `python -m vidiff`) may.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vidiff"
ENTRY_POINTS = {"vidiff/cli.py", "vidiff/demo.py", "vidiff/__main__.py"}
FORBIDDEN = "data_tools"


def forbidden_imports(path: Path, forbidden: str = FORBIDDEN) -> list[str]:
    """'module:line: import ...' for each import of `forbidden` (or a submodule) in `path`, wherever
    it sits (top level, inside a function, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts) if path.is_relative_to(ROOT) else path.stem
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == forbidden or name.startswith(forbidden + "."):
                found.append(f"{module}:{node.lineno}: imports {name}")
    return found


def test_the_library_does_not_import_data_tools():
    offenders = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in ENTRY_POINTS
        for hit in forbidden_imports(path)
    ]
    assert not offenders, "vidiff's library must not import data_tools (move the code into vidiff):\n" + "\n".join(
        offenders
    )


def test_the_check_sees_every_kind_of_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n"
        "import data_tools\n"
        "def f():\n"
        "    from data_tools.curate import curate\n"
        "    import data_tools.cuts as cuts\n"
        "from data_toolsmith import x\n"  # a different package: not a hit
        "from . import data_tools\n"  # a relative import inside vidiff: not the top-level package
    )
    hits = forbidden_imports(bad)
    assert [h.split(":", 1)[1] for h in hits] == [
        "2: imports data_tools",
        "4: imports data_tools.curate",
        "5: imports data_tools.cuts",
    ]
