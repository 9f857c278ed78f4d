"""cnn_core.gemm: MKL's products equal NumPy's in every layout the kernels pass, and the
fallbacks (small products, odd layouts, no MKL) give NumPy's own results."""

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cnn_core import gemm, training

BIG = (40, 96, 300)  # m, k, n: over MKL_MIN_MACS, every side over MKL_MIN_SIDE
ON_MKL = pytest.mark.skipif(not gemm.MKL_GEMMS, reason="MKL is not installed here")


@pytest.fixture
def mkl_calls(monkeypatch):
    """Counts the products that reach MKL, which computes them whatever the CPU."""
    calls = []

    def counted(real):
        def call(*args):
            calls.append(args[3:6])
            return real(*args)

        return call

    monkeypatch.setattr(gemm, "_GEMM", {t: counted(f) for t, f in gemm.MKL_GEMMS.items()})
    return calls


def operands(m, k, n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)


def close(actual, a, b, rtol=1e-5):
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_the_dependency_loads_on_linux_x86_64():
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("mkl is a dependency on x86-64 Linux only")
    assert gemm.MKL_PATH is not None and gemm.MKL_GEMMS


def test_mkl_computes_on_intels_cpus_only():
    vendor = gemm.cpu_vendor()
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine")
    by_vendor = "mkl" if vendor == "GenuineIntel" and gemm.MKL_GEMMS else "numpy"
    assert by_vendor == gemm.BACKEND
    a, b = operands(*BIG)
    if gemm.BACKEND == "numpy":  # NumPy's bits, not MKL's
        np.testing.assert_array_equal(gemm.matmul(a, b), a @ b)


@ON_MKL
@pytest.mark.parametrize("a_t", [False, True], ids=["a", "a.T"])
@pytest.mark.parametrize("b_t", [False, True], ids=["b", "b.T"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_views_are_read_in_place(mkl_calls, a_t, b_t, dtype):
    m, k, n = BIG
    a, b = operands(m, k, n, dtype)
    a_in = np.ascontiguousarray(a.T).T if a_t else a  # same values, column-major storage
    b_in = np.ascontiguousarray(b.T).T if b_t else b
    out = gemm.matmul(a_in, b_in)
    assert out.dtype == dtype and out.shape == (m, n)
    close(out, a, b, 1e-5 if dtype == np.float32 else 1e-12)
    assert mkl_calls == [(m, n, k)]


@ON_MKL
def test_strided_rows_accumulate_and_stacks(mkl_calls):
    m, k, n = BIG
    a, b = operands(m, k, n)
    # out is one row block of a bigger array (a leading dimension larger than n), as the
    # window-row kernels write it; b is a column slice of a wider matrix.
    wide = np.random.default_rng(1).standard_normal((k, n + 17)).astype(np.float32)
    b_view = wide[:, 5 : 5 + n]
    big_out = np.zeros((m, 3, n), np.float32)
    gemm.matmul(a, b_view, out=big_out[:, 1])
    close(big_out[:, 1], a, b_view)
    assert not big_out[:, 0].any() and not big_out[:, 2].any()
    start = np.ones((m, n), np.float32)
    acc = start.copy()
    gemm.matmul(a, b, out=acc, accumulate=True)
    np.testing.assert_allclose(acc, start + a @ b, rtol=1e-5, atol=1e-4)
    stack_a = np.stack([a, 2 * a])
    stack_b = np.stack([b, -b])
    stacked = gemm.matmul(stack_a, stack_b)
    close(stacked[0], a, b)
    close(stacked[1], 2 * a, -b)
    assert len(mkl_calls) == 4


@ON_MKL
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_t", [False, True], ids=["b", "b.T"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "accumulate"])
def test_results_do_not_depend_on_alignment(mkl_calls, dtype, b_t, accumulate):
    """A resumed job's arrays sit at other addresses: its products must not change a bit."""
    m, k, n = 32, 288, 448
    a, b = operands(m, k, n, dtype)
    start = np.random.default_rng(3).standard_normal((m, n)).astype(dtype)
    results = []
    for offset in range(0, 16, 3):  # elements: up to 60 bytes off any alignment in float32
        a_at, b_at, out = (at_offset(x, offset) for x in (a, b.T if b_t else b, start))
        results.append(gemm.matmul(a_at, b_at.T if b_t else b_at, out, accumulate).copy())
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert len(mkl_calls) == len(results)


def at_offset(x, offset):
    """A C-contiguous copy of ``x`` starting ``offset`` elements into a fresh buffer."""
    buffer = np.empty(x.size + 16, x.dtype)
    view = buffer[offset : offset + x.size].reshape(x.shape)
    view[...] = x
    return view


@ON_MKL
def test_accumulating_transposed_operands_into_a_row_block(mkl_calls):
    m, k, n = BIG
    a, b = operands(m, k, n, np.float64)
    a_t, b_t = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    big = np.ones((m, 2, n))
    gemm.matmul(a_t, b_t, out=big[:, 1], accumulate=True)
    # atol: some sums come out near 0, where a relative tolerance alone asks for every bit
    np.testing.assert_allclose(big[:, 1], 1 + a @ b, rtol=1e-12, atol=1e-12)
    assert (big[:, 0] == 1).all()
    stacks = np.ones((2, m, n))
    gemm.matmul(np.stack([a, -a]), np.stack([b, b]), out=stacks, accumulate=True)
    np.testing.assert_allclose(stacks, [1 + a @ b, 1 - a @ b], rtol=1e-12, atol=1e-12)
    assert len(mkl_calls) == 3


@pytest.mark.parametrize(
    "shapes",
    [
        ((40, 96), (95, 300), None),
        ((40, 96), (96, 300), (39, 300)),
        ((2, 40, 96), (3, 96, 300), None),
    ],
    ids=["inner", "out", "stack"],
)
def test_shapes_that_do_not_fit_raise_numpys_error(mkl_calls, shapes):
    a_shape, b_shape, out_shape = shapes
    a, b = np.ones(a_shape, np.float32), np.ones(b_shape, np.float32)
    out = None if out_shape is None else np.empty(out_shape, np.float32)
    with pytest.raises(ValueError):
        gemm.matmul(a, b, out)
    assert mkl_calls == []


@pytest.mark.parametrize(
    "case",
    [
        "small",
        "thin side",
        "int",
        "mixed dtypes",
        "byte order",
        "overlap",
        "no unit stride",
        "empty",
    ],
)
def test_what_mkl_cannot_take_goes_to_numpy(mkl_calls, case):
    m, k, n = BIG
    a, b = operands(m, k, n)
    out = None
    if case == "small":
        a, b = operands(10, 84, 64)
    elif case == "thin side":
        a, b = operands(6, 400, 600)
    elif case == "int":
        a, b = (a * 10).astype(np.int64), (b * 10).astype(np.int64)
    elif case == "mixed dtypes":
        b = b.astype(np.float64)
    elif case == "byte order":  # MKL would multiply the swapped bytes
        a, b = a.astype(">f4"), b.astype(">f4")
    elif case == "overlap":  # out is b: NumPy buffers the product, MKL would read what it wrote
        a, b = operands(n, n, n)
        out = b
    elif case == "no unit stride":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    elif case == "empty":
        a, b = operands(m, 0, n)
    expected = a @ b
    result = gemm.matmul(a, b, out=out)
    np.testing.assert_array_equal(result, expected)
    assert mkl_calls == []


def test_without_mkl_every_product_is_numpys(monkeypatch):
    monkeypatch.setattr(gemm, "_GEMM", {})
    m, k, n = BIG
    a, b = operands(m, k, n)
    np.testing.assert_array_equal(gemm.matmul(a, b), a @ b)
    acc = np.ones((m, n), np.float32)
    gemm.matmul(a, b, out=acc, accumulate=True)
    expected = np.ones((m, n), np.float32)
    expected += a @ b
    np.testing.assert_array_equal(acc, expected)


def test_thread_limits_follow_numpys_blas_not_the_sequential_mkl():
    """MKL's sequential layer reports one thread whatever the limit; were it counted, every
    fit would train on one process."""
    for limit in (1, 2):
        with threadpool_limits(limits=limit, user_api="blas"):
            assert training.blas_threads() == limit


def test_mkl_is_left_alone_without_the_package_or_with_a_library_missing(monkeypatch):
    """MKL ends the process when a library it needs cannot be loaded: it is not used then."""

    def no_package(name):
        raise importlib.metadata.PackageNotFoundError(name)

    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "distribution", no_package)
        assert gemm._load_mkl() == (None, None)
    if gemm.MKL_PATH is not None:
        monkeypatch.setattr(gemm.os, "listdir", lambda folder: ["libmkl_rt.so.3"])
        assert gemm._load_mkl() == (None, None)


@pytest.mark.skipif(gemm.BACKEND != "mkl", reason="MKL does not compute here")
def test_preload_maps_the_kernels_a_capped_worker_could_not_load_later():
    gemm.preload()
    maps = Path("/proc/self/maps").read_text()
    assert "libmkl_core" in maps and "libmkl_sequential" in maps


def test_openblas_is_switched_to_avx2_kernels_on_zen_4_only():
    for core in ("SkylakeX", "Cooperlake", "SapphireRapids"):
        assert gemm.preferred_openblas_core("AuthenticAMD", "25", core) == "Haswell"
    assert gemm.preferred_openblas_core("AuthenticAMD", "26", "SkylakeX") is None  # Zen 5
    assert gemm.preferred_openblas_core("AuthenticAMD", "25", "Zen") is None
    assert gemm.preferred_openblas_core("GenuineIntel", "6", "SkylakeX") is None
    assert gemm.preferred_openblas_core("AuthenticAMD", "25", None) is None


def openblas_cores_around_import(env):
    """(OpenBLAS's kernels before and after importing cnn_core, OPENBLAS_CORETYPE after) in a
    fresh process with ``env`` added to this one's environment (less OPENBLAS_CORETYPE)."""
    script = (
        "import ctypes, os, threadpoolctl\n"
        "import numpy\n"
        "path = next(i['filepath'] for i in threadpoolctl.threadpool_info()"
        " if i['internal_api'] == 'openblas')\n"
        "lib = ctypes.CDLL(path)\n"
        "lib.gotoblas_corename.restype = ctypes.c_char_p\n"
        "before = lib.gotoblas_corename().decode()\n"
        "from cnn_core import gemm\n"
        "print(before, gemm.openblas_core(), os.environ.get('OPENBLAS_CORETYPE'))\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


# Nehalem's kernels (SSE) run on every x86-64 CPU; OpenBLAS names other architectures' otherwise
DYNAMIC_X86_OPENBLAS = pytest.mark.skipif(
    gemm.openblas_core() is None or platform.machine() != "x86_64",
    reason="NumPy's BLAS is not an OpenBLAS for x86-64 that picks its kernels at load",
)


@DYNAMIC_X86_OPENBLAS
def test_importing_cnn_core_switches_openblas_by_the_rule_and_keeps_a_users_choice():
    before, after, env = openblas_cores_around_import({})
    preferred = gemm.preferred_openblas_core(gemm.cpu_vendor(), gemm.cpu_family(), before)
    assert after == (preferred or before)
    assert env == (preferred or "None")  # what processes started from there load
    assert openblas_cores_around_import({"OPENBLAS_CORETYPE": "Nehalem"}) == ["Nehalem"] * 3


@DYNAMIC_X86_OPENBLAS
def test_switched_kernels_compute_the_same_products(monkeypatch):
    chosen = gemm.openblas_core()
    monkeypatch.setenv("OPENBLAS_CORETYPE", os.environ.get("OPENBLAS_CORETYPE", chosen))
    a, b = operands(*BIG)
    big_a, big_b = operands(300, 300, 300)  # big enough for OpenBLAS's threads, restarted
    try:
        assert gemm.use_openblas_core("Nehalem") == "Nehalem"
        assert os.environ["OPENBLAS_CORETYPE"] == "Nehalem"
        close(a @ b, a, b)
        with threadpool_limits(limits=2, user_api="blas"):
            close(big_a @ big_b, big_a, big_b)
        # a name OpenBLAS does not know: its own pick, and the variable as it was
        assert gemm.use_openblas_core("NoSuchCore") == gemm.openblas_core() != "NoSuchCore"
        assert os.environ["OPENBLAS_CORETYPE"] == "Nehalem"
    finally:
        assert gemm.use_openblas_core(chosen) == chosen
    close(a @ b, a, b)
    with threadpool_limits(limits=2, user_api="blas"):
        close(big_a @ big_b, big_a, big_b)
