"""The IDX reader: exact round trips, and a clear PipelineError for every kind of damaged file."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.idx import read_idx, write_idx
from pipeline.errors import PipelineError


def test_round_trip_is_exact(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(array, tmp_path / "x.gz")
    assert np.array_equal(read_idx(tmp_path / "x.gz", ndim=3).numpy(), array)


def write_raw(path, payload: bytes):
    with gzip.open(path, "wb") as stream:
        stream.write(payload)
    return path


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x08\x03\0\0" + b"\0" * 20, "bad magic number"),
        (b"\0\0\x0d\x03" + struct.pack(">3I", 1, 2, 2) + b"\0" * 16, "is not unsigned byte"),
        (b"\0\0\x08\x01" + struct.pack(">I", 3) + b"\0" * 3, "expected 3 dimensions"),
        (b"\0\0\x08\x03" + struct.pack(">2I", 1, 28), "header is truncated"),
        (b"\0\0\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\0" * 100, "found only 100"),
        (b"\0\0\x08\x03" + struct.pack(">3I", 1, 2, 2) + b"\0" * 5, "found more"),
    ],
)
def test_damaged_content_is_named(tmp_path, payload, message):
    with pytest.raises(PipelineError, match=message):
        read_idx(write_raw(tmp_path / "bad.gz", payload), ndim=3)


def test_lying_header_does_not_allocate_what_it_claims(tmp_path):
    # 4 billion images of 64K x 64K pixels: only the bytes really present may be read.
    path = write_raw(tmp_path / "huge.gz", b"\0\0\x08\x03" + struct.pack(">3I", 2**32 - 1, 2**16, 2**16) + b"\0" * 64)
    with pytest.raises(PipelineError, match="found only 64"):
        read_idx(path, ndim=3)


def test_truncated_gzip_and_plain_bytes(tmp_path):
    write_idx(np.zeros((50, 28, 28), np.uint8), tmp_path / "ok.gz")
    data = (tmp_path / "ok.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    for name in ("cut.gz", "plain.gz"):
        with pytest.raises(PipelineError, match="not a valid gzip file"):
            read_idx(tmp_path / name, ndim=3)
    with pytest.raises(PipelineError, match="file not found"):
        read_idx(tmp_path / "missing.gz", ndim=3)


VALID = gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 2, 3, 3) + bytes(range(18)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
            lambda edits: bytes(b if i not in dict(edits) else dict(edits)[i] for i, b in enumerate(VALID))
        ),
        st.binary(max_size=60).map(lambda header: gzip.compress(header)),
    )
)
def test_fuzzed_bytes_parse_or_raise_pipeline_error(tmp_path, data):
    path = tmp_path / "fuzz.gz"
    path.write_bytes(data)
    try:
        tensor = read_idx(path, ndim=3)
    except PipelineError:
        return
    assert tensor.ndim == 3 and tensor.numel() <= len(data) * 1100  # gzip expands at most ~1032x
