"""Dataset readers: every format's success path and every refusal of a hostile or broken file."""

from __future__ import annotations

import dataclasses
import gzip
import io
import stat
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from cnn_core.datasets import (
    Dataset,
    convert_images,
    images_to_array,
    load_dataset,
    load_idx,
    load_image_zip,
    load_mnist_sample,
    load_npz,
    open_image,
)
from cnn_core.errors import ConfigError, DatasetError
from tests.support.builders import HOLDOUT, idx_bytes, npz_bytes

BYTE = np.float32(1 / 255)


# ---------------------------------------------------------------------------------------------
# Builders


def npy_member(shape, descr="<f4", data=b"") -> bytes:
    """A .npy file with a hand-written header, followed by whatever data is given."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def zip_bytes(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of {name or ZipInfo: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def image_bytes(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny but valid-looking grayscale PNG whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def assert_refused(match: str, fn, *args, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError, match=match) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


@pytest.fixture(scope="module")
def holdout():
    with np.load(HOLDOUT, allow_pickle=False) as f:
        return f["X"], f["y"]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def labels(n: int, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


# ---------------------------------------------------------------------------------------------
# npz: success


@pytest.mark.parametrize(
    ("raw_shape", "to_nchw"),
    [
        ((6, 5, 7), lambda a: a[:, None]),
        ((6, 1, 5, 7), lambda a: a),
        ((6, 3, 5, 7), lambda a: a),
        ((6, 5, 7, 3), lambda a: a.transpose(0, 3, 1, 2)),
        ((6, 5, 7, 1), lambda a: a.transpose(0, 3, 1, 2)),
    ],
    ids=["NHW", "NCHW-gray", "NCHW-rgb", "NHWC-rgb", "NHWC-gray"],
)
def test_npz_uint8_in_each_layout(rng, raw_shape, to_nchw):
    X = rng.integers(0, 256, raw_shape, dtype=np.uint8)
    ds = load_npz(npz_bytes(X=X, y=labels(6)))
    expected = to_nchw(X).astype(np.float32) * BYTE
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
    np.testing.assert_array_equal(ds.X, expected)
    assert ds.input_shape == expected.shape[1:]
    assert ds.y.dtype == np.int64 and ds.y.tolist() == labels(6).tolist()
    assert ds.class_names == ["0", "1", "2"]
    assert (
        ds.preprocessing.items()
        >= {
            "scale": 1 / 255,
            "image_scale": 1 / 255,
            "source_dtype": "uint8",
            "source_format": "npz",
            "polarity": "mixed",  # random pixels: no background to match
        }.items()
    )


def test_npz_float_in_0_1_is_kept_and_images_scaled_by_1_255(rng):
    X = rng.random((4, 8, 8))
    ds = load_npz(npz_bytes(X=X, y=[0, 1, 0, 1]))
    np.testing.assert_array_equal(ds.X[:, 0], X.astype(np.float32))
    assert ds.preprocessing["scale"] == 1.0
    assert ds.preprocessing["image_scale"] == 1 / 255
    assert ds.preprocessing["source_dtype"] == "float64"


def test_npz_float_in_0_255_is_kept_and_images_unscaled(rng):
    X = (rng.random((4, 3, 8, 8)) * 255).astype(np.float32)
    ds = load_npz(npz_bytes(X=X, y=[0, 1, 0, 1]))
    np.testing.assert_array_equal(ds.X, X)
    assert ds.preprocessing["scale"] == 1.0 and ds.preprocessing["image_scale"] == 1.0


def test_npz_integer_pixels_of_another_dtype_scale_like_uint8(rng):
    X = rng.integers(0, 256, (5, 6, 6))
    assert X.dtype == np.int64
    ds = load_npz(npz_bytes(X=X, y=labels(5, 2)))
    np.testing.assert_array_equal(ds.X[:, 0], X.astype(np.uint8).astype(np.float32) * BYTE)
    assert ds.preprocessing["scale"] == 1 / 255


def test_npz_class_names_and_label_forms(rng):
    X = rng.integers(0, 256, (4, 5, 5), dtype=np.uint8)
    names = np.array(["cat", "dog", "emu", "fox"])
    for y in ([[0], [1], [1], [0]], np.array([0.0, 1.0, 1.0, 0.0]), [False, True, True, False]):
        ds = load_npz(npz_bytes(X=X, y=np.asarray(y), class_names=names))
        assert ds.y.tolist() == [0, 1, 1, 0]
        assert ds.class_names == ["cat", "dog", "emu", "fox"]
        assert ds.n_classes == 4 and ds.class_counts() == [2, 2, 0, 0]


def test_npz_from_path_bytes_and_file_object(tmp_path, rng):
    data = npz_bytes(X=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8), y=[0, 1, 2, 0])
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    results = [load_npz(data), load_npz(path), load_npz(str(path)), load_npz(io.BytesIO(data))]
    for ds in results[1:]:
        np.testing.assert_array_equal(ds.X, results[0].X)
        np.testing.assert_array_equal(ds.y, results[0].y)


def test_npz_savez_compressed_is_read(rng):
    buf = io.BytesIO()
    np.savez_compressed(buf, X=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8), y=[0, 1, 0, 1])
    assert load_npz(buf.getvalue()).n_samples == 4


# ---------------------------------------------------------------------------------------------
# npz: refusals


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return os.makedirs, (str(marker),)

    X = np.empty(2, dtype=object)
    X[0], X[1] = Payload(), Payload()
    data = npz_bytes(X=X, y=[0, 1])
    assert_refused("objects.*pickle", load_npz, data)
    names = np.array(["a", Payload()], dtype=object)
    assert_refused(
        "objects", load_npz, npz_bytes(X=np.zeros((2, 4, 4), np.uint8), y=[0, 1], class_names=names)
    )
    assert not marker.exists()


def test_npz_string_arrays_are_refused():
    assert_refused("X has dtype <U", load_npz, npz_bytes(X=np.array(["a", "b"]), y=[0, 1]))
    assert_refused(
        "y has dtype", load_npz, npz_bytes(X=np.zeros((2, 4, 4), np.uint8), y=np.array(["0", "1"]))
    )


def test_npz_declaring_huge_shape_is_refused_before_allocation():
    data = zip_bytes({"X.npy": npy_member((100_000, 100_000)), "y.npy": npy_member((2,), "<i8")})
    assert len(data) < 500
    start = time.perf_counter()
    err = assert_refused("limit", load_npz, data)
    assert time.perf_counter() - start < 1.0
    assert "(100000, 100000)" in str(err) and "GiB" in str(err)


def test_npz_declaring_more_data_than_it_holds_is_refused():
    data = zip_bytes(
        {
            "X.npy": npy_member((2, 4, 4), "|u1", b"\x00" * 5),
            "y.npy": npy_member((2,), "<i8", np.array([0, 1]).tobytes()),
        }
    )
    assert_refused("truncated or corrupt", load_npz, data)


def test_npz_negative_declared_shape_is_refused():
    data = zip_bytes({"X.npy": npy_member((-1, 4, 4), "|u1"), "y.npy": npy_member((2,), "<i8")})
    assert_refused("negative shape|not a valid", load_npz, data)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_nan_or_inf_is_refused(bad):
    X = np.zeros((3, 4, 4), np.float32)
    X[1, 2, 3] = bad
    err = assert_refused("NaN or infinite", load_npz, npz_bytes(X=X, y=[0, 1, 0]))
    assert "sample 1" in str(err)


def test_npz_float_pixels_outside_0_255_are_refused():
    X = np.full((2, 4, 4), -0.5, np.float32)
    assert_refused("0..1 or 0..255", load_npz, npz_bytes(X=X, y=[0, 1]))
    assert_refused("0..1 or 0..255", load_npz, npz_bytes(X=X * -600, y=[0, 1]))


def test_npz_integer_pixels_outside_0_255_are_refused():
    X = np.full((2, 4, 4), 256, np.int32)
    assert_refused("must be 0..255", load_npz, npz_bytes(X=X, y=[0, 1]))


@pytest.mark.parametrize(
    ("y", "extra", "match"),
    [
        ([0, -1, 1], {}, "negative label -1"),
        ([0, 1, 2], {"class_names": np.array(["a", "b"])}, "label 2 but there are only 2"),
        ([0, 1, 10**9], {}, "over the limit"),
        ([4, 4, 4], {}, "single class"),
        ([0, 1], {}, "3 samples but y has shape"),
        ([0.0, 1.5, 1.0], {}, "non-integer label 1.5"),
        ([[1, 0], [0, 1], [1, 0]], {}, "one-hot"),
        ([0, 1, 1], {"class_names": np.array(["a", "a"])}, "unique"),
        ([0, 1, 1], {"class_names": np.array(["a", " "])}, "printable"),
    ],
    ids=[
        "negative",
        "beyond-names",
        "huge",
        "single-class",
        "length",
        "fraction",
        "one-hot",
        "duplicate-names",
        "blank-name",
    ],
)
def test_npz_bad_labels_are_refused(y, extra, match):
    X = np.zeros((3, 4, 4), np.uint8)
    assert_refused(match, load_npz, npz_bytes(X=X, y=np.asarray(y), **extra))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 784), r"reshape it, e\.g\. X\.reshape\(-1, 28, 28\)"),
        ((3, 8, 8, 4), r"\(3, 8, 8, 4\).*neither 1 nor 3.*drop the alpha"),
        ((3, 5, 8, 8), r"\(N,H,W\), \(N,C,H,W\) or \(N,H,W,C\) with C of 1 or 3"),
        ((3, 1, 1, 8, 8), "5 dimensions"),
        ((0, 8, 8), "no samples"),
    ],
)
def test_npz_bad_x_shapes_are_refused(shape, match):
    y = np.zeros(shape[0], np.int64)
    assert_refused(match, load_npz, npz_bytes(X=np.zeros(shape, np.uint8), y=y))


def test_npz_missing_y_or_not_a_zip_is_refused():
    assert_refused("lacks y.*np.savez", load_npz, npz_bytes(X=np.zeros((2, 4, 4), np.uint8)))
    assert_refused("not a readable zip", load_npz, b"not a zip at all")
    data = zip_bytes({"X.npy": npy_member((2,), "|u1", b"\0\0"), "notes.txt": b"hi"})
    assert_refused("'notes.txt' is not a .npy", load_npz, data)
    data = zip_bytes({"X.npy": b"\x93NUMPY\x03\x00garbage", "y.npy": b"garbage"})
    assert_refused("'X.npy' is not a valid .npy array", load_npz, data)


def test_npz_header_checks_come_before_reading_data():
    y = npy_member((2,), "<i8", np.array([0, 1]).tobytes())
    cases = [
        ((1, 4097, 4097), "|u1", "over the limit of 16,777,216 pixels"),
        ((2, 0, 4), "|u1", "at least 1"),
        ((2, 4, 4), "<c8", "X has dtype complex64"),
        ((2, 4, 4), [("a", "<f4")], "structured dtype"),
    ]
    for shape, descr, match in cases:
        assert_refused(match, load_npz, zip_bytes({"X.npy": npy_member(shape, descr), "y.npy": y}))
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (50_000, 50_000)}
    )
    assert_refused("GiB", load_npz, zip_bytes({"X.npy": buf.getvalue(), "y.npy": y}))


def test_npz_x_is_read_in_chunks_into_the_dtype_it_is_kept_in(rng, monkeypatch):
    import cnn_core.datasets.npz as npz

    monkeypatch.setattr(npz, "_X_CHUNK_BYTES", 64)  # many chunks, some not whole
    X = rng.random((5, 3, 7, 7)) * 255
    y = labels(5, 2)
    for source in (X, np.asfortranarray(X), X.astype(">f8"), X.astype(np.float32)):
        ds = load_npz(npz_bytes(X=source, y=y))
        assert ds.pixels.dtype == np.float32 and ds.pixels.flags.c_contiguous
        np.testing.assert_array_equal(ds.pixels, X.astype(np.float32))
        assert ds.preprocessing["source_dtype"] == str(source.dtype)
    wide = rng.integers(0, 256, (5, 7, 7, 3)).astype(np.int64)
    np.testing.assert_array_equal(
        load_npz(npz_bytes(X=wide, y=y)).pixels, wide.transpose(0, 3, 1, 2).astype(np.uint8)
    )
    wide[4, 6, 6, 2] = 256  # in the last chunk; it would wrap to 0 as uint8
    assert_refused("values from 0 to 256", load_npz, npz_bytes(X=wide, y=y))
    X[3, 2, 6, 6] = np.nan
    assert_refused(
        r"NaN or infinite values in 1 samples \(first: sample 3\)", load_npz, npz_bytes(X=X, y=y)
    )


def test_npz_output_size_is_capped_in_the_dtype_it_is_kept_in(rng):
    halves = npz_bytes(X=rng.random((4, 10, 10)).astype(np.float16), y=labels(4, 2))
    assert load_npz(halves, max_bytes=1600).n_samples == 4  # kept as float32: 1,600 bytes
    assert_refused("would take 1.6 KiB as float32", load_npz, halves, max_bytes=1599)
    uint8 = npz_bytes(X=rng.integers(0, 256, (4, 10, 10), dtype=np.uint8), y=labels(4, 2))
    assert load_npz(uint8, max_bytes=432).pixels.nbytes == 400  # kept as uint8, 400 + y's 32


def test_npz_class_names_must_be_a_list_of_short_strings():
    X, y = np.zeros((2, 4, 4), np.uint8), np.array([0, 1])
    for names, match in [
        (np.array(["a"]), "1 class names"),
        (np.array([["a", "b"]]), r"shape \(1, 2\)"),
        (np.array([1, 2]), "save it as"),
        (np.array(["a", "b" * 300]), "up to 300 characters"),
    ]:
        assert_refused(match, load_npz, npz_bytes(X=X, y=y, class_names=names))


def test_npz_other_members_are_checked_but_not_loaded():
    X, y = np.zeros((2, 4, 4), np.uint8), np.array([0, 1])
    assert load_npz(npz_bytes(X=X, y=y, mean=np.zeros(3))).n_samples == 2
    assert_refused("'notes' has dtype <U", load_npz, npz_bytes(X=X, y=y, notes=np.array(["x"])))
    many = {f"a{i}": np.zeros(1) for i in range(70)}
    assert_refused("70 members|72 members", load_npz, npz_bytes(X=X, y=y, **many))
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = zip_bytes(
            {
                "X.npy": npy_member((2,), "|u1", b"\0\0"),
                zipfile.ZipInfo("X.npy"): npy_member((2,), "|u1", b"\0\0"),
            }
        )
    assert_refused("several members named", load_npz, data)


def test_npz_huge_float_or_unsigned_labels_are_refused():
    X = np.zeros((2, 4, 4), np.uint8)
    assert_refused("too large", load_npz, npz_bytes(X=X, y=np.array([0.0, 1e30])))
    assert_refused("too large", load_npz, npz_bytes(X=X, y=np.array([0, 2**64 - 1], np.uint64)))


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.fixture
def idx_pair(rng):
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    y = np.arange(12) % 10
    return images, y, idx_bytes(images), idx_bytes(y)


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


# ---------------------------------------------------------------------------------------------
# Image zip: success


def test_zip_of_grayscale_png_folders(rng):
    pixels = rng.integers(0, 256, (5, 9, 7), dtype=np.uint8)
    entries = {
        "digits/": b"",
        "digits/b/": b"",
        "digits/b/1.png": image_bytes(pixels[0]),
        "digits/b/0.png": image_bytes(pixels[1]),
        "digits/a/x.png": image_bytes(pixels[2]),
        "digits/c/y.PNG": image_bytes(pixels[3]),
        "digits/c/z.png": image_bytes(pixels[4]),
        "__MACOSX/digits/a/._x.png": b"\x00\x05\x16\x07junk",
        "digits/a/.DS_Store": b"junk",
    }
    ds = load_image_zip(zip_bytes(entries))
    assert ds.class_names == ["a", "b", "c"]
    assert ds.input_shape == (1, 9, 7)
    assert ds.y.tolist() == [0, 1, 1, 2, 2]  # sorted by class, then by entry name
    order = [2, 1, 0, 3, 4]
    np.testing.assert_array_equal(ds.X[:, 0], pixels[order].astype(np.float32) * BYTE)
    assert (
        ds.preprocessing.items()
        >= {
            "scale": 1 / 255,
            "image_scale": 1 / 255,
            "source_dtype": "uint8",
            "source_format": "image_zip",
            "polarity": "mixed",  # random pixels: no background to match
        }.items()
    )


def test_zip_of_rgb_jpeg_folders_matches_prediction_path(rng):
    files = {
        f"{cls}/{i}.jpg": image_bytes(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), "JPEG")
        for cls in ("cat", "dog")
        for i in range(3)
    }
    ds = load_image_zip(zip_bytes(files, zipfile.ZIP_STORED))
    assert ds.input_shape == (3, 10, 12) and ds.class_counts() == [3, 3]
    assert ds.X.min() >= 0.0 and ds.X.max() <= 1.0
    again = images_to_array(
        [open_image(b) for b in files.values()], ds.input_shape, ds.preprocessing
    )
    np.testing.assert_array_equal(ds.X, again)


def test_zip_mixed_sizes_and_modes_take_common_shape(rng):
    gray = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
    color = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    files = {
        "a/0.png": image_bytes(gray[0]),
        "a/1.png": image_bytes(gray[1]),
        "b/0.png": image_bytes(gray[2]),
        "b/1.png": image_bytes(color),
    }
    ds = load_image_zip(zip_bytes(files))
    assert ds.input_shape == (3, 8, 8)  # one colour image makes all RGB; 8x8 is most common
    # Prediction keeps the aspect ratio: 16x20 fits as 6x8, padded with the training background
    odd = images_to_array([Image.fromarray(color)], (3, 8, 8), ds.preprocessing)[0]
    fill = np.rint(ds.preprocessing["background"]).astype(np.float32) * np.float32(BYTE)
    np.testing.assert_array_equal(odd[:, [0, 7]], np.broadcast_to(fill[:, None, None], (3, 2, 8)))
    np.testing.assert_array_equal(ds.X[0, 1], gray[0].astype(np.float32) * BYTE)


def test_zip_images_of_another_aspect_are_framed_as_prediction_frames_them():
    def square_on_white(h, w):  # a 4x4 black square in the middle of white paper
        pixels = np.full((h, w), 255, np.uint8)
        pixels[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 0
        return pixels

    wide, tall = square_on_white(8, 32), square_on_white(40, 8)
    files = {f"{k}/{i}.png": image_bytes(square_on_white(8, 8)) for k in "ab" for i in range(3)}
    files |= {"a/wide.png": image_bytes(wide), "b/tall.png": image_bytes(tall)}
    ds = load_image_zip(zip_bytes(files))
    assert ds.input_shape == (1, 8, 8) and ds.preprocessing["polarity"] == "light"
    names = sorted(files, key=lambda n: (n.split("/")[0], n))
    for name, pixels in (("a/wide.png", wide), ("b/tall.png", tall)):
        x = ds.X[names.index(name)]
        predicted = convert_images(
            [Image.fromarray(pixels)], ds.input_shape, ds.preprocessing, invert="false"
        )[0]
        np.testing.assert_array_equal(x, predicted[0])  # the one conversion of both
        rows, cols = np.nonzero(x[0] < 0.5)
        assert np.ptp(rows) == np.ptp(cols)  # the square stays square: no stretching
        assert ds.X[names.index(name), 0, 0].min() == 1.0  # padded with the white paper
    np.testing.assert_array_equal(ds.pixels[0, 0], square_on_white(8, 8))  # kept as it was


def test_zip_of_png_digits_equals_the_npz_digits(holdout):
    X, y = holdout
    picked = np.concatenate([np.flatnonzero(y == d)[:4] for d in range(10)])  # sorted by class
    files = {f"{y[i]}/{i:03d}.png": image_bytes(X[i]) for i in picked}
    ds = load_image_zip(zip_bytes(files))
    expected = load_npz(npz_bytes(X=X[picked], y=y[picked]))
    assert ds.class_names == expected.class_names
    np.testing.assert_array_equal(ds.X, expected.X)
    np.testing.assert_array_equal(ds.y, expected.y)


# ---------------------------------------------------------------------------------------------
# Image zip: refusals


@pytest.fixture
def png():
    return image_bytes(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../x.png", "outside the archive"),
        ("a/../../x.png", "outside the archive"),
        ("/etc/x.png", "absolute path"),
        ("C:/x.png", "absolute path"),
        ("a\\..\\..\\x.png", "backslashes"),
    ],
)
def test_zip_entries_escaping_their_folder_are_refused(png, name, match):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, name: png})
    assert_refused(match, load_image_zip, data)


def test_zip_symlink_entry_is_refused(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, symlink_info("b/1.png"): "/etc/passwd"})
    assert_refused("symbolic link", load_image_zip, data)


def test_zip_with_too_many_entries_is_refused(png):
    files = {f"{c}/{i}.png": png for c in "ab" for i in range(3)}
    assert load_image_zip(zip_bytes(files), max_entries=6).n_samples == 6
    assert_refused(
        "7 entries, over the limit of 6",
        load_image_zip,
        zip_bytes({**files, "a/9.png": png}),
        max_entries=6,
    )


def test_zip_high_compression_ratio_bomb_is_refused(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": b"\x00" * 2**22})
    start = time.perf_counter()
    assert_refused("expands more than 200 times", load_image_zip, data)
    assert time.perf_counter() - start < 1.0


def test_zip_entry_lying_about_its_size_is_refused(png):
    buf = io.BytesIO(zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": b"\x00" * 2**20}))
    with zipfile.ZipFile(buf) as zf:
        lying = zf.getinfo("b/1.png").file_size
    raw = buf.getvalue().replace(struct.pack("<I", lying), struct.pack("<I", 10))
    assert_refused("Bad CRC|expands more than", load_image_zip, raw)


def test_zip_total_decompressed_bytes_are_capped(rng):
    files = {
        f"{c}/{i}.png": image_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8))
        for c in "ab"
        for i in range(4)
    }
    assert_refused(
        "decompress to more than", load_image_zip, zip_bytes(files), max_total_bytes=4000
    )


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("b/readme.txt", b"hello", "not a PNG or JPEG image"),
        ("b/inner.zip", None, "nested archives"),
        ("b/inner.png", None, "archive, not an image"),
        ("b/fake.png", "bmp", "not a PNG or JPEG image"),
        ("b/cut.png", "cut", "could not be decoded"),
        ("top.png", "png", "not inside a class folder"),
        ("b/deep/x.png", "png", "nested too deep"),
    ],
)
def test_zip_non_image_or_misplaced_entries_are_refused(png, name, data, match):
    if data is None:
        data = zip_bytes({"x/0.png": png})
    elif data == "bmp":
        buf = io.BytesIO()
        Image.new("L", (4, 4)).save(buf, format="BMP")
        data = buf.getvalue()
    elif data == "cut":
        data = image_bytes(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))[
            :-40
        ]
    elif data == "png":
        data = png
    assert_refused(match, load_image_zip, zip_bytes({"a/0.png": png, "b/0.png": png, name: data}))


def test_zip_special_entries_are_refused(png):
    fifo = zipfile.ZipInfo("b/1.png")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert_refused(
        "special file", load_image_zip, zip_bytes({"a/0.png": png, "b/0.png": png, fifo: png})
    )
    raw = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.png": png})
    entry = raw.rindex(b"PK\x01\x02")  # the last central directory record: b/1.png
    flags = struct.unpack_from("<H", raw, entry + 8)[0] | 0x1  # the "encrypted" bit
    locked = raw[: entry + 8] + struct.pack("<H", flags) + raw[entry + 10 :]
    assert_refused("encrypted", load_image_zip, locked)
    raw = zip_bytes({"a/0.png": png, "b/0.png": png, "b/1.pngXAAA": png})
    assert_refused("NUL byte", load_image_zip, raw.replace(b"XAAA", b"\x00AAA"))


def test_zip_palette_images_count_as_gray_only_with_a_gray_palette(rng):
    gray = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).quantize(4)
    color = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).quantize(4)

    def png_of(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    assert gray.mode == color.mode == "P"
    files = {"a/0.png": png_of(gray), "b/0.png": png_of(gray)}
    assert load_image_zip(zip_bytes(files)).input_shape == (1, 6, 6)
    files["b/1.png"] = png_of(color)
    assert load_image_zip(zip_bytes(files)).input_shape == (3, 6, 6)


def test_zip_output_size_is_capped_as_uint8(png):
    data = zip_bytes({"a/0.png": png, "b/0.png": png})  # two 4x4 grayscale images
    assert load_image_zip(data, max_bytes=32).pixels.dtype == np.uint8
    assert_refused("would take 32 bytes as uint8", load_image_zip, data, max_bytes=31)


def test_zip_of_a_single_class_or_no_images_is_refused(png):
    assert_refused(
        "single class folder 'a'", load_image_zip, zip_bytes({"a/0.png": png, "a/1.png": png})
    )
    assert_refused("no images", load_image_zip, zip_bytes({"a/": b"", "__MACOSX/x": b""}))


def test_decompression_bomb_png_is_refused_quickly(png):
    bomb = png_declaring(20_000, 10_000)
    assert len(bomb) < 200
    start = time.perf_counter()
    assert_refused(
        "too many pixels",
        load_image_zip,
        zip_bytes({"a/0.png": png, "b/0.png": png, "b/bomb.png": bomb}),
    )
    assert_refused("too many pixels", open_image, bomb)
    assert time.perf_counter() - start < 1.0


def test_png_over_the_pixel_cap_is_refused_before_decoding(png):
    big = png_declaring(5_000, 5_000)  # under Pillow's own limit, over ours
    start = time.perf_counter()
    assert_refused(
        "5000x5000 = 25,000,000 pixels, over the limit",
        load_image_zip,
        zip_bytes({"a/0.png": png, "b/0.png": png, "b/big.png": big}),
    )
    assert_refused("over the limit of 100", open_image, png_declaring(20, 20), max_pixels=100)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------------
# load_dataset: format from the bytes


def test_load_dataset_ignores_misleading_file_names(tmp_path, rng, idx_pair, png):
    images, y, img_file, lbl_file = idx_pair
    npz_path = tmp_path / "train-images-idx3-ubyte.gz"
    npz_path.write_bytes(npz_bytes(X=images, y=y))
    zip_path = tmp_path / "data.npz"
    zip_path.write_bytes(zip_bytes({"a/0.png": png, "b/0.png": png}))
    lbl_path, img_path = tmp_path / "images.zip", tmp_path / "labels.npz"
    lbl_path.write_bytes(gzip.compress(lbl_file))
    img_path.write_bytes(img_file)

    assert load_dataset([npz_path]).preprocessing["source_format"] == "npz"
    assert load_dataset([zip_path]).preprocessing["source_format"] == "image_zip"
    ds = load_dataset([lbl_path, img_path])  # labels first: paired by dimensions
    assert ds.preprocessing["source_format"] == "idx"
    np.testing.assert_array_equal(ds.X, load_idx(img_file, lbl_file).X)
    assert load_dataset([io.BytesIO(img_file), lbl_file]).n_samples == 12


def test_load_dataset_takes_a_bare_source_and_refuses_empty_zips(tmp_path, rng):
    data = npz_bytes(X=rng.integers(0, 256, (4, 5, 5), dtype=np.uint8), y=[0, 1, 2, 0])
    assert load_dataset(data).n_samples == 4
    assert load_dataset(io.BytesIO(data)).n_samples == 4
    assert_refused("zip file is empty", load_dataset, [zip_bytes({})])
    with pytest.raises(TypeError):
        load_dataset([12345])
    with pytest.raises(TypeError):
        load_npz(12345)


def test_load_dataset_refuses_what_it_cannot_pair(idx_pair, png):
    _, _, img_file, lbl_file = idx_pair
    assert_refused("needs its partner", load_dataset, [img_file])
    assert_refused("both IDX files hold images", load_dataset, [img_file, img_file])
    assert_refused("got 3 files", load_dataset, [img_file, lbl_file, lbl_file])
    assert_refused(
        "upload it alone", load_dataset, [npz_bytes(X=np.zeros((2, 3, 3)), y=[0, 1]), lbl_file]
    )
    assert_refused("zip one folder per class", load_dataset, [png])
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    assert_refused("np.savez", load_dataset, [npy.getvalue()])
    assert_refused("expected an .npz", load_dataset, [b"hello world"])


# ---------------------------------------------------------------------------------------------
# The shipped sample


def test_mnist_sample_loads():
    ds = load_mnist_sample()
    assert ds.n_samples == 2000 and ds.input_shape == (1, 28, 28)
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.class_counts() == [200] * 10
    assert ds.X.dtype == np.float32 and ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert ds.preprocessing["image_scale"] == 1 / 255
    assert ds.X[:, 0, 0, :].max() == 0.0  # MNIST: white digits on a black border


def test_mnist_sample_is_parsed_once_and_cannot_be_corrupted():
    first, second = load_mnist_sample(), load_mnist_sample()
    assert second.pixels is first.pixels and second.y is first.y  # shared, not re-read
    assert first.pixels.dtype == np.uint8
    for array in (first.pixels, first.y):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    first.class_names.append("x")
    first.preprocessing["image_scale"] = 1.0
    third = load_mnist_sample()
    assert third.class_names == [str(d) for d in range(10)]
    assert third.preprocessing["image_scale"] == 1 / 255


def test_mnist_holdout_is_disjoint_and_stratified(holdout):
    X, y = holdout
    assert X.shape == (500, 28, 28) and X.dtype == np.uint8
    assert np.bincount(y).tolist() == [50] * 10
    sample = np.rint(load_mnist_sample().X[:, 0] * 255).astype(np.uint8)
    seen = {x.tobytes() for x in sample}
    assert not any(x.tobytes() in seen for x in X)


# ---------------------------------------------------------------------------------------------
# images_to_array and open_image


def test_png_of_a_sample_digit_reads_back_exactly():
    ds = load_mnist_sample()
    digit = np.rint(ds.X[7, 0] * 255).astype(np.uint8)
    img = open_image(image_bytes(digit))
    np.testing.assert_array_equal(
        images_to_array([img], ds.input_shape, ds.preprocessing), ds.X[7:8]
    )


def test_images_to_array_converts_modes(rng):
    prep = {"image_scale": 1 / 255}
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)

    out = images_to_array([Image.fromarray(gray), Image.fromarray(rgb)], (1, 6, 5), prep)
    assert out.shape == (2, 1, 6, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], gray.astype(np.float32) * BYTE)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(out[1, 0], luma.astype(np.float32) * BYTE)

    out = images_to_array([Image.fromarray(gray)], (3, 6, 5), prep)
    assert out.shape == (1, 3, 6, 5) and (out[0] == out[0, :1]).all()

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 128
    out = images_to_array([Image.fromarray(rgba, "RGBA")], (1, 2, 2), prep)
    np.testing.assert_allclose(out[0, 0], [[1.0, 0.0], [128 / 255, 128 / 255]], atol=1 / 255)

    pal = Image.fromarray(gray).quantize(8)
    assert pal.mode == "P"
    out = images_to_array([pal], (1, 6, 5), prep)
    np.testing.assert_array_equal(out[0, 0], np.asarray(pal.convert("L")) * BYTE)

    la = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA")
    np.testing.assert_array_equal(
        images_to_array([la], (1, 6, 5), prep)[0, 0], gray.astype(np.float32) * BYTE
    )


def test_images_to_array_reads_16_bit_png():
    wide = np.array([[0, 65535], [257 * 100, 257 * 200]], np.uint16)
    img = open_image(image_bytes(wide))
    assert img.mode.startswith("I")
    out = images_to_array([img], (1, 2, 2), {"image_scale": 1.0})
    np.testing.assert_array_equal(out[0, 0], [[0, 255], [100, 200]])


def test_images_to_array_resizes_and_scales(rng):
    img = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    out = images_to_array([img, img], (3, 28, 28), {"image_scale": 1.0})
    assert out.shape == (2, 3, 28, 28) and out.max() > 1.0
    assert images_to_array([], (1, 28, 28), {"image_scale": 1.0}).shape == (0, 1, 28, 28)


def test_images_to_array_handles_cmyk_float_and_exif_rotation(rng):
    prep = {"image_scale": 1.0}
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    np.testing.assert_array_equal(
        images_to_array([cmyk], (3, 4, 6), prep)[0],
        np.asarray(cmyk.convert("RGB")).transpose(2, 0, 1),
    )
    floats = Image.fromarray(np.array([[-5.0, 12.4], [254.6, 300.0]], np.float32))
    assert floats.mode == "F"
    np.testing.assert_array_equal(
        images_to_array([floats], (1, 2, 2), prep)[0, 0], [[0, 12], [255, 255]]
    )

    tall = np.zeros((6, 4), np.uint8)
    tall[0, :] = 255  # top row lit
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after turning 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(tall).save(buf, format="PNG", exif=exif)
    out = images_to_array([open_image(buf.getvalue())], (1, 4, 6), prep)[0, 0]
    np.testing.assert_array_equal(out[:, -1], [255] * 4)  # the lit row is now the right column


def test_images_to_array_and_open_image_refuse_truncated_images(rng):
    data = image_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))[:-200]
    assert_refused("truncated or corrupt", open_image, data)
    lazy = Image.open(io.BytesIO(data))
    assert_refused(
        "image 0 could not be decoded", images_to_array, [lazy], (1, 64, 64), {"image_scale": 1.0}
    )


def test_images_to_array_refuses_bad_arguments():
    img = Image.new("L", (4, 4))
    assert_refused("2 channels", images_to_array, [img], (2, 4, 4), {"image_scale": 1.0})
    with pytest.raises(ConfigError, match=r"input_shape must be \[channels, height, width\]"):
        images_to_array([img], (4, 4), {"image_scale": 1.0})
    assert_refused("image_scale", images_to_array, [img], (1, 4, 4), {})


def test_open_image_refuses_other_formats_and_garbage():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    assert_refused("not a PNG or JPEG", open_image, buf.getvalue())
    assert_refused("not a PNG or JPEG", open_image, b"\x89PNG garbage")


def test_open_image_starts_its_messages_with_a_given_name(rng):
    png = image_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    for data, kwargs in [
        (b"GIF89a", {}),
        (png[:60], {}),
        (png[:-200], {}),
        (png, {"max_pixels": 100}),
        (png_declaring(20_000, 10_000), {}),
    ]:
        error = assert_refused(
            "^digit.png: the image ", open_image, data, name="digit.png", **kwargs
        )
        unnamed = assert_refused("^the image ", open_image, data, **kwargs)
        assert type(error) is type(unnamed)
        assert str(error) == f"digit.png: {unnamed}"


# ---------------------------------------------------------------------------------------------
# Dataset


def test_dataset_is_frozen_and_checks_its_arrays():
    two = {"y": np.array([0, 1]), "class_names": ["a", "b"]}
    ds = Dataset(pixels=np.zeros((2, 1, 3, 3), np.float32), **two)
    assert repr(ds) == "Dataset(n_samples=2, input_shape=(1, 3, 3), n_classes=2)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.y = None
    with pytest.raises(DatasetError, match="uint8 or float32"):
        Dataset(pixels=np.zeros((2, 3, 3)), **two)
    with pytest.raises(DatasetError, match="uint8 or float32"):
        Dataset(pixels=np.zeros((2, 1, 3, 3)), **two)  # float64
    with pytest.raises(DatasetError, match="scale"):
        Dataset(pixels=np.zeros((2, 1, 3, 3), np.uint8), **two)
    with pytest.raises(DatasetError, match="int64 of shape"):
        Dataset(pixels=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0]), class_names=["a", "b"])
    with pytest.raises(DatasetError, match="0..1"):
        Dataset(
            pixels=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0, 2]), class_names=["a", "b"]
        )


def test_uint8_pixels_give_float_inputs_equal_by_batch_or_whole(rng):
    pixels = rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)
    y, names = np.arange(6) % 2, ["a", "b"]
    ds = Dataset(pixels=pixels, y=y, class_names=names, preprocessing={"scale": 1 / 255})
    X = ds.X
    assert X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_array_equal(X, pixels.astype(np.float32) * BYTE)
    assert ds.X is not X  # converted at each access, never kept beside the pixels
    np.testing.assert_array_equal(ds.inputs(np.array([4, 1])), X[[4, 1]])
    np.testing.assert_array_equal(ds.inputs(slice(2, 5)), X[2:5])
    floats = Dataset(pixels=X, y=y, class_names=names, preprocessing={"scale": 1 / 255})
    assert floats.X is X  # float pixels are the input already, whatever the scale says


def test_8_bit_sources_stay_uint8_and_float_sources_float32(rng, idx_pair):
    images = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    y = labels(6, 2)
    for X in (images, images.astype(np.int16), images[..., None]):
        ds = load_npz(npz_bytes(X=X, y=y))
        assert ds.pixels.dtype == np.uint8 and ds.pixels.flags.c_contiguous
        np.testing.assert_array_equal(ds.pixels[:, 0], images)
    for X in (images.astype(np.float64), images.astype(np.float32) / 255):
        assert load_npz(npz_bytes(X=X, y=y)).pixels.dtype == np.float32
    assert load_idx(*idx_pair[2:]).pixels.dtype == np.uint8
    files = {f"{k}/{i}.png": image_bytes(images[i]) for i, k in enumerate("aabbab")}
    assert load_image_zip(zip_bytes(files)).pixels.dtype == np.uint8


def test_mnist_style_data_records_its_polarity_and_framing():
    prep = load_mnist_sample().preprocessing
    assert prep["background"] == [0.0] and prep["polarity"] == "dark"
    assert prep["framing"]["box"] == 20
    assert np.allclose(prep["framing"]["centre"], [14, 14], atol=0.5)


def test_light_background_is_recorded_and_unframed_data_records_no_framing(rng):
    X = np.full((20, 12, 12), 250, dtype=np.uint8)
    for i, image in enumerate(X):  # dark marks of many sizes and places
        side = 2 + i % 8
        image[i % 3 : i % 3 + side, : side + 1] = rng.integers(0, 100, (side, side + 1))
    prep = load_npz(npz_bytes(X=X, y=labels(20))).preprocessing
    assert prep["background"] == [250.0] and prep["polarity"] == "light"
    assert "framing" not in prep  # no box and centre that the images share
