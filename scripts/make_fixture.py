#!/usr/bin/env python3
"""Cuts the Fashion-MNIST test fixture (tests/fixtures/fashion-mnist/) from the full data set:
the first 500 train and the first 100 test images with their labels, as gzipped IDX files.

Usage: scripts/make_fixture.py [SOURCE_DIR] [OUT_DIR]
(defaults: /usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist,
and tests/fixtures/fashion-mnist). Standard library only; gzip mtime 0 so reruns are identical.
"""
import gzip
import struct
import sys
from pathlib import Path

SOURCE = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/fashion-mnist")


def cut(name: str, count: int) -> None:
    data = gzip.decompress((SOURCE / name).read_bytes())
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{name}: not a u8 IDX file"
    dims = list(struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank]))
    item = 1
    for d in dims[1:]:
        item *= d
    start = 4 + 4 * rank
    dims[0] = count
    header = struct.pack(">HBB", 0, 0x08, rank) + struct.pack(f">{rank}I", *dims)
    payload = data[start : start + count * item]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_bytes(gzip.compress(header + payload, compresslevel=9, mtime=0))


for split, count in (("train", 500), ("t10k", 100)):
    cut(f"{split}-images-idx3-ubyte.gz", count)
    cut(f"{split}-labels-idx1-ubyte.gz", count)
