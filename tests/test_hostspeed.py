"""The host reference speed at toy sizes: positive numbers, the context they depend on, and one line naming them."""

import json

import pytest
import torch

from vidiff.hostspeed import conv_step_ms, format_host_reference, host_reference, matmul_gflops

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(matmul_n=64, conv_shape=(1, 4, 2, 8, 8), repeats=1)


def test_host_reference_fields_are_positive_and_the_line_names_them():
    d = host_reference(**TINY)
    assert d["matmul_gflops"] > 0 and d["conv_step_ms"] > 0
    assert (d["matmul_n"], d["dtype"], d["device"], d["threads"]) == (64, "fp32", "cpu", 1)
    assert d["torch"] == torch.__version__
    json.dumps(d)  # recorded as is in the demo's report.json

    line = format_host_reference(d)
    assert line.startswith("host: ") and "\n" not in line
    assert f"{d['matmul_gflops']:.1f} GFLOP/s large matmul (64^3 fp32, 1 threads)" in line
    assert f"conv step {d['conv_step_ms']:.1f} ms" in line


def test_a_gpu_is_named_instead_of_the_threads():
    d = {"matmul_gflops": 612345.0, "matmul_n": 8192, "dtype": "bf16", "conv_step_ms": 0.41,
         "device_name": "NVIDIA H200", "threads": 16}
    assert format_host_reference(d) == (
        "host: 612345.0 GFLOP/s large matmul (8192^3 bf16, NVIDIA H200), conv step 0.4 ms"
    )


def test_the_parts_take_sizes_and_reject_zero_repeats():
    assert matmul_gflops(32, repeats=1) > 0
    assert conv_step_ms((1, 2, 1, 4, 4), out_channels=2, repeats=1) > 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        matmul_gflops(32, repeats=0)
