"""Matrix products of the kernels: Intel MKL's sequential GEMM where it is installed, else NumPy's.

Why not NumPy's ``@`` everywhere: a convolution's products are thin (32 or 64 filters, a few
hundred deep), and OpenBLAS, the BLAS NumPy ships, takes 1.2x to 1.45x MKL's time for them on
this machine (``benchmarks/kernel_variants.py``, section 8), PyTorch's convolutions being near
the CPU's peak. Every product in cnn_core runs on one BLAS thread (training shards are
processes, a parallel prediction is one thread per core), so MKL's sequential layer is the one
to load: it starts no threads, so forking shard processes stays safe, and ctypes lets go of the
GIL during the call, so prediction threads overlap.

MKL's results do not depend on the arrays' alignment (tests/core/test_gemm.py checks offsets), so a
job resumed in another process computes bit for bit what it would have. Anything MKL cannot take
as it is (other dtypes, strides without a unit axis, outputs that overlap an input, empty
arrays) goes to NumPy, as do small products and everything on a machine without the ``mkl``
package.
"""

import ctypes
import importlib.metadata
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_THREADING_SEQUENTIAL = 1
_INT_MAX = 2**31 - 1  # MKL's LP64 interface takes 32-bit sizes
# Smaller products run faster in NumPy: MKL's fixed cost per call outweighs its speed below a
# million multiply-adds, and it is slow on a side of fewer than 8 (LeNet-5's 6 filters).
# benchmarks/kernel_variants.py, section 8.
MKL_MIN_MACS = 1 << 20
MKL_MIN_SIDE = 8


MKL_PATH = None  # the MKL library loaded, which BLAS thread limits leave out (it has no threads)


def _load_mkl():
    """The MKL runtime library set to its sequential layer, or None without the package."""
    try:
        files = importlib.metadata.distribution("mkl").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = [f.locate() for f in files if f.name.startswith("libmkl_rt.so")]
    if not paths:
        return None
    global MKL_PATH
    MKL_PATH = os.path.realpath(paths[0])
    lib = ctypes.CDLL(MKL_PATH)
    lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL)  # before any other MKL call
    i, p = ctypes.c_int, ctypes.c_void_p
    for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
        getattr(lib, name).argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        getattr(lib, name).restype = None
    return lib


_MKL = _load_mkl()
BACKEND = "mkl" if _MKL is not None else "numpy"
_GEMM = {} if _MKL is None else {np.float32: _MKL.cblas_sgemm, np.float64: _MKL.cblas_dgemm}


def _operand(a):
    """(transpose flag, leading dimension) under which row-major GEMM reads the 2-D array ``a``
    in place, or None when neither axis has unit stride."""
    rows, cols = a.shape
    s0, s1 = a.strides
    size = a.itemsize
    if s1 == size and s0 % size == 0 and s0 // size >= cols:
        return _NO_TRANS, s0 // size
    if s0 == size and s1 % size == 0 and s1 // size >= rows:
        return _TRANS, s1 // size
    return None


def matmul(a, b, out=None, accumulate=False):
    """``a @ b`` of 2-D arrays, written into ``out`` if given (added to it with ``accumulate``);
    stacks of matrices (3-D) are multiplied pair by pair. Returns the result."""
    if a.ndim == 3:
        if out is None:
            out = np.empty((a.shape[0], a.shape[1], b.shape[2]), np.result_type(a, b))
        for k in range(a.shape[0]):
            matmul(a[k], b[k], out[k], accumulate)
        return out
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
        accumulate = False
    if not _by_mkl(a, b, out, accumulate):
        if accumulate:
            out += a @ b
        else:
            np.matmul(a, b, out=out)
    return out


def _by_mkl(a, b, out, accumulate):
    """Compute ``out (+)= a @ b`` with MKL if it takes these arrays as they are; False if not."""
    (m, k), n = a.shape, b.shape[1]
    gemm = _GEMM.get(a.dtype.type)
    if gemm is None or not a.dtype == b.dtype == out.dtype or not out.flags.writeable:
        return False
    if min(m, n) < MKL_MIN_SIDE or k == 0 or m * n * k < MKL_MIN_MACS:
        return False
    ta, tb, tc = _operand(a), _operand(b), _operand(out)
    if not (ta and tb and tc) or tc[0] != _NO_TRANS or max(m, n, k, ta[1], tb[1], tc[1]) > _INT_MAX:
        return False
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False  # MKL would read what it already wrote
    beta = 1.0 if accumulate else 0.0
    a_data, b_data, out_data = a.ctypes.data, b.ctypes.data, out.ctypes.data
    gemm(
        _ROW_MAJOR, ta[0], tb[0], m, n, k, 1.0, a_data, ta[1], b_data, tb[1], beta, out_data, tc[1]
    )
    return True
