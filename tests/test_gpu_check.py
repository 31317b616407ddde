"""scripts/gpu_check.py, the lent GPU machine's check, on this CPU machine: it imports without side effects,
finds the stage configs, and run without CUDA it says so and exits non-zero at once."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def test_gpu_check_without_cuda_exits_with_a_clear_message():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path even where a GPU is present
    r = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_gpu_check_imports_safely_and_finds_the_stage_configs():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines, runs nothing
    names = [p.name for p in module.stage_configs()]
    assert names == ["base_dit.yaml", "base_unet.yaml", "i2v.yaml", "ssr.yaml", "tsr.yaml"]  # not vae.yaml
