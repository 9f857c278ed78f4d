"""load_npz: every layout and dtype read and scaled, every refusal of a hostile or broken npz."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from cnn_core.datasets import (
    load_npz,
)
from tests.support.builders import npz_bytes, zip_bytes
from tests.support.datasets import BYTE, assert_refused, labels


def npy_member(shape, descr="<f4", data=b"") -> bytes:
    """A .npy file with a hand-written header, followed by whatever data is given."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


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
