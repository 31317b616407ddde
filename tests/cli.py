"""Running the `vidiff` command line from tests, as a user would: `python -m vidiff ARGS` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_vidiff(*args, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`python -m vidiff ARGS` from the repository root with this checkout's vidiff first on the path, output
    captured, one torch thread (the tests' models are tiny: threads only contend). `env` adds variables."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "vidiff", *map(str, args)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
