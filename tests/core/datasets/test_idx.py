"""load_idx: plain and gzipped MNIST IDX pairs, and every refusal of a broken or hostile one."""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np

from cnn_core.datasets import (
    load_idx,
)
from tests.support.builders import idx_bytes
from tests.support.datasets import BYTE, assert_refused


def test_idx_plain_and_gzipped(idx_pair):
    images, y, img_file, lbl_file = idx_pair
    plain = load_idx(img_file, lbl_file)
    zipped = load_idx(gzip.compress(img_file), gzip.compress(lbl_file))
    for ds in (plain, zipped):
        np.testing.assert_array_equal(ds.X, images[:, None].astype(np.float32) * BYTE)
        assert ds.y.tolist() == y.tolist()
        assert ds.class_names == [str(i) for i in range(10)]
        assert ds.preprocessing["source_format"] == "idx"
        assert ds.preprocessing["image_scale"] == 1 / 255


def test_idx_swapped_files_are_named(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("swapped", load_idx, lbl_file, img_file)


def test_idx_truncated_is_refused(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("truncated: its header declares", load_idx, img_file[:-1], lbl_file)
    assert_refused("truncated inside its header", load_idx, img_file[:10], lbl_file)


def test_idx_trailing_bytes_are_refused(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("3 bytes after", load_idx, img_file, lbl_file + b"abc")


def test_idx_wrong_magic_is_refused(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("not an IDX file", load_idx, b"\x01\x02" + img_file[2:], lbl_file)
    assert_refused(
        r"type 0x0D \(float32\)", load_idx, img_file[:2] + b"\x0d" + img_file[3:], lbl_file
    )
    assert_refused("4 dimensions", load_idx, img_file[:3] + b"\x04" + img_file[4:], lbl_file)


def test_idx_overflowing_dims_are_refused_fast(idx_pair):
    _, _, _, lbl_file = idx_pair
    huge = b"\x00\x00\x08\x03" + struct.pack(">3I", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    start = time.perf_counter()
    assert_refused("over the .* limit", load_idx, huge + b"\x00" * 100, lbl_file)
    assert time.perf_counter() - start < 1.0


def test_idx_gzip_bomb_is_capped():
    bomb = gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * (16 * 2**20))
    assert len(bomb) < 100_000
    assert_refused(
        "decompresses to more than the 1.0 MiB limit", load_idx, bomb, bomb, max_bytes=2**20
    )
    assert_refused("corrupt or truncated gzip", load_idx, bomb[:1000], bomb)


def test_idx_mismatched_lengths_and_single_class_are_refused(idx_pair):
    _, _, img_file, _ = idx_pair
    assert_refused(
        "12 images but the labels file holds 5", load_idx, img_file, idx_bytes(np.arange(5))
    )
    assert_refused("single class", load_idx, img_file, idx_bytes(np.zeros(12)))


def test_idx_empty_or_two_of_a_kind_is_refused(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused(
        "holds no images", load_idx, idx_bytes(np.zeros((0, 28, 28))), idx_bytes(np.zeros(0))
    )
    assert_refused("it is a labels file", load_idx, lbl_file, lbl_file)
    assert_refused("it is an images file", load_idx, img_file, img_file)


def test_idx_input_file_over_the_limit_is_refused(idx_pair):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("larger than the", load_idx, img_file, lbl_file, max_bytes=1000)
