"""The IDX format of the MNIST family (http://yann.lecun.com/exdb/mnist/), gzip-compressed.

A header of magic number (two zero bytes, a type code, the number of dimensions) and one big-endian uint32 per
dimension, then the data. Only unsigned bytes (type 0x08) occur in these data sets. Sizes from the header are
checked against the bytes actually present before any tensor is made, so a lying header cannot cause a huge
allocation or a half-filled tensor.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

UNSIGNED_BYTE = 0x08
CHUNK_BYTES = 1 << 20


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read a gzipped IDX file of unsigned bytes with `ndim` dimensions into a uint8 tensor."""
    try:
        with gzip.open(path, "rb") as stream:
            shape = read_header(stream, path, ndim)
            expected = math.prod(shape)
            data = read_at_most(stream, expected + 1)  # one byte more reveals trailing data
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as error:
        raise PipelineError(f"{path}: not a valid gzip file, truncated or corrupt ({error})") from None
    if len(data) != expected:
        found = "more" if len(data) > expected else f"only {len(data)}"
        raise PipelineError(f"{path}: header promises {expected} bytes of data for shape {shape}, found {found}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).reshape(shape).copy())


def read_header(stream, path: Path, ndim: int) -> tuple[int, ...]:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0":
        raise PipelineError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'missing'})")
    if magic[2] != UNSIGNED_BYTE:
        raise PipelineError(f"{path}: IDX data type 0x{magic[2]:02x} is not unsigned byte (0x08)")
    if magic[3] != ndim:
        raise PipelineError(f"{path}: expected {ndim} dimensions, the header says {magic[3]}")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise PipelineError(f"{path}: IDX header is truncated")
    return struct.unpack(f">{ndim}I", dims)


def read_at_most(stream, limit: int) -> bytes:
    """Read up to `limit` bytes in chunks, so memory follows the data present, not the size a header claims."""
    chunks, total = [], 0
    while total < limit and (chunk := stream.read(min(CHUNK_BYTES, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def write_idx(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as gzipped IDX: the inverse of `read_idx`, used to make test data."""
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
