"""The clip manifest: Parquet and JSONL round trips, and clear errors for a bad manifest."""

import math

import pyarrow.parquet as pq
import pytest

from vidiff.errors import VidiffError
from vidiff.manifest import COLUMNS, read_manifest, write_manifest


def _rows():
    base = dict(source="/v/a.mp4", path=None, fps=25.0, width=640, height=272, shot=0, caption="a red circle")
    return [
        dict(
            base,
            id="a_0",
            start_frame=0,
            end_frame=30,
            start_s=0.0,
            end_s=1.2,
            num_frames=30,
            motion=0.05,
            status="kept",
            reason="",
        ),
        dict(
            base,
            id="a_1",
            start_frame=30,
            end_frame=40,
            start_s=1.2,
            end_s=1.6,
            num_frames=10,
            motion=math.nan,
            status="dropped",
            reason="short_shot",
        ),
        dict(
            {k: None for k in COLUMNS},
            id="b_error",
            source="/v/b.mp4",
            num_frames=0,
            motion=math.nan,
            status="error",
            reason="/v/b.mp4: empty file (0 bytes)",
            caption="",
        ),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    path = write_manifest(_rows(), tmp_path / f"manifest{suffix}")
    rows = read_manifest(path)
    assert [r["id"] for r in rows] == ["a_0", "a_1", "b_error"]
    assert set(rows[0]) == set(COLUMNS)
    assert rows[0]["motion"] == pytest.approx(0.05) and math.isnan(rows[1]["motion"])
    assert rows[2]["start_frame"] is None and rows[2]["status"] == "error"
    assert [r["id"] for r in read_manifest(path, status="kept")] == ["a_0"]


def test_parquet_has_typed_columns(tmp_path):
    table = pq.read_table(write_manifest(_rows(), tmp_path / "m.parquet"))
    assert table.schema.field("start_frame").type == "int64"
    assert table.schema.field("motion").type == "double"
    assert table.num_rows == 3


def test_no_temp_file_is_left_behind(tmp_path):
    write_manifest(_rows(), tmp_path / "m.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_clear_errors(tmp_path):
    with pytest.raises(VidiffError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(VidiffError, match="line 2"):
        read_manifest(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(VidiffError, match="not a readable Parquet"):
        read_manifest(junk)
    with pytest.raises(VidiffError, match=".parquet or .jsonl"):
        write_manifest(_rows(), tmp_path / "m.csv")
