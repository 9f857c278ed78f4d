"""Matrix products of the kernels: Intel MKL's sequential GEMM on Intel's CPUs where it is
installed, else NumPy's, whose OpenBLAS computes with its AVX2 kernels on AMD's Zen 4 (see
``preferred_openblas_core``).

Why not NumPy's ``@`` everywhere: a convolution's products are thin (32 or 64 filters, 100 to
600 deep), and OpenBLAS, the BLAS NumPy ships, takes 1.2x to 1.45x MKL's time for them on an
Intel CPU with AVX-512 (``benchmarks/kernel_variants.py``, section 8), while PyTorch's
convolutions run near the CPU's peak. On an AMD EPYC (AVX2) the order is the other way round,
so the ``mkl`` package is then left loaded but unused (``BACKEND`` says which library computes).

Training and big-batch prediction already run one BLAS thread per core (shard processes,
prediction threads), so MKL's sequential layer is the one to load: it starts
no threads, so forking shard processes stays safe, and ctypes lets go of the GIL during the
call, so prediction threads overlap. (A small prediction, computed in the calling thread, thus
runs its big products on one core where OpenBLAS could have used more.)

A job resumed in another process must compute bit for bit what it would have: MKL gave the same
bits at every alignment tests/core/test_gemm.py tries (offsets of 0 to 60 bytes, transposed
operands, accumulation, both dtypes). Anything MKL cannot take as it is (other dtypes or byte
orders, strides without a unit axis, outputs that overlap an input, empty or unaligned arrays,
mismatched shapes, for NumPy to refuse) goes to NumPy, as do small products and everything on a
machine without the ``mkl`` package or with another vendor's CPU. (A job resumed on another
kind of CPU can differ in its last bits anyway: each BLAS picks its kernels by the CPU. So can
one resumed with other OpenBLAS kernels: another OPENBLAS_CORETYPE, or a checkpoint from
before cnn_core switched them on a Zen 4.)
"""

import ctypes
import importlib.metadata
import os
import threading

import numpy as np
import threadpoolctl

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_INTERFACE_LP64, _THREADING_SEQUENTIAL = 0, 1
_INT_MAX = 2**31 - 1  # the LP64 interface takes 32-bit sizes
# What the sequential LP64 GEMM loads besides the runtime, found next to it (MKL ends the process
# when it cannot load a library it needs, rather than failing the call).
_NEEDED = ("libmkl_core.so", "libmkl_sequential.so", "libmkl_intel_lp64.so", "libmkl_def.so")
# Smaller products run faster in NumPy: MKL's fixed cost per call outweighs its speed below a
# million multiply-adds, and it is slow on a side of fewer than 8 (LeNet-5's 6 filters).
# benchmarks/kernel_variants.py, section 8.
MKL_MIN_MACS = 1 << 20
MKL_MIN_SIDE = 8


def _load_mkl():
    """(MKL's runtime library on its sequential layer and LP64 interface, its path), or
    (None, None): without the package, with a library it needs missing, or when MKL was set
    up before (by another package) on other layers."""
    try:
        files = importlib.metadata.distribution("mkl").files or []
    except importlib.metadata.PackageNotFoundError:
        return None, None
    paths = [os.path.realpath(f.locate()) for f in files if f.name.startswith("libmkl_rt.so")]
    if not paths or not os.path.exists(paths[0]):
        return None, None
    present = os.listdir(os.path.dirname(paths[0]))
    if not all(any(name.startswith(needed) for name in present) for needed in _NEEDED):
        return None, None
    try:
        lib = ctypes.CDLL(paths[0])
        if lib.MKL_Set_Interface_Layer(_INTERFACE_LP64) != _INTERFACE_LP64:
            return None, None
        if lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL) != _THREADING_SEQUENTIAL:
            return None, None
        i, p = ctypes.c_int, ctypes.c_void_p
        for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
            getattr(lib, name).argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
            getattr(lib, name).restype = None
    except (OSError, AttributeError):  # not loadable, or not the MKL these calls expect
        return None, None
    return lib, paths[0]


def _cpuinfo(field):
    """The value of ``field`` for the first CPU in /proc/cpuinfo, or "" unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(field):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def cpu_vendor():
    """The CPU's vendor as Linux names it ("GenuineIntel", "AuthenticAMD"), or "" unknown."""
    return _cpuinfo("vendor_id")


def cpu_family():
    """The CPU's family number as Linux gives it ("25" for AMD's Zen 3 and 4), or ""."""
    return _cpuinfo("cpu family")


def _openblas():
    """NumPy's own OpenBLAS (the copy its wheel ships in numpy.libs, not another package's),
    if it is a build that picks its kernels by CPU as it loads; else None."""
    for info in threadpoolctl.threadpool_info():
        in_numpy = os.path.basename(os.path.dirname(info["filepath"])) == "numpy.libs"
        if info["internal_api"] == "openblas" and in_numpy:
            lib = ctypes.PyDLL(info["filepath"])  # the loaded library; calls keep the GIL
            needed = ("gotoblas_dynamic_init", "gotoblas_dynamic_quit", "gotoblas_corename")
            if all(hasattr(lib, name) for name in needed):
                lib.gotoblas_corename.restype = ctypes.c_char_p
                return lib
    return None


_OPENBLAS = _openblas()


def openblas_core():
    """The kernels NumPy's OpenBLAS computes with, by OpenBLAS's name for their CPU
    ("Haswell", "SkylakeX"), or None for another BLAS or an OpenBLAS of one set of kernels."""
    return None if _OPENBLAS is None else _OPENBLAS.gotoblas_corename().decode()


def use_openblas_core(name):
    """Make NumPy's OpenBLAS compute with its kernels for the CPU ``name`` (OpenBLAS's names,
    kernels this CPU can run: OpenBLAS does not check), as if OPENBLAS_CORETYPE had been set
    when it loaded; it then is, for the processes this one starts. Only while no other thread
    computes a product. Returns the kernels in use afterwards: OpenBLAS's own pick again, and
    the variable as it was, if it does not know ``name``."""
    if _OPENBLAS is None:
        return None
    before = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = name
    _OPENBLAS.gotoblas_dynamic_quit()
    _OPENBLAS.gotoblas_dynamic_init()  # reads OPENBLAS_CORETYPE
    # Seen here: without a restart of its threads, products on two threads took 1.2x the time
    # they take with the same kernels picked at load (a throwaway timing); stopped, the
    # threads start afresh at the next product that needs them, as after a fork.
    if hasattr(_OPENBLAS, "blas_thread_shutdown_"):
        _OPENBLAS.blas_thread_shutdown_()
    if openblas_core() != name:
        if before is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = before
    return openblas_core()


# On an AMD Zen 4 (family 25 with AVX-512) OpenBLAS picks the kernels it has for Intel's
# AVX-512 CPUs (SkylakeX), which took 1.03x to 1.49x the time of its AVX2 ones (Haswell) on
# the products training makes there, and less on LeNet-5's first conv by im2col (6 rows,
# batches under 32: 0.35x-0.42x, microseconds an image) and its 84-unit dense layer (0.88x):
# kernel_variants.py, section 10. Zen 5 (family 26), with full-width AVX-512 units, is not
# measured, so not switched. Neither is a core type the user set, nor an OpenBLAS that other
# threads may be using as cnn_core loads.
_AVX512_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")


def preferred_openblas_core(vendor, family, core):
    """The kernels cnn_core switches OpenBLAS to from ``core``, its own pick on a CPU of
    ``vendor`` and ``family`` (as /proc/cpuinfo gives them), or None to keep them."""
    zen4 = vendor == "AuthenticAMD" and family == "25"
    return "Haswell" if zen4 and core in _AVX512_CORES else None


# The rule applied to OpenBLAS's own pick as it loaded: None where that pick stands.
PREFERRED_OPENBLAS_CORE = preferred_openblas_core(cpu_vendor(), cpu_family(), openblas_core())
if (
    PREFERRED_OPENBLAS_CORE
    and "OPENBLAS_CORETYPE" not in os.environ
    and threading.active_count() == 1
):
    use_openblas_core(PREFERRED_OPENBLAS_CORE)


# MKL_PATH: the library loaded, which BLAS thread limits leave out (it starts no threads).
_MKL, MKL_PATH = _load_mkl()
MKL_GEMMS = {}  # native byte order only: dtype('>f4') is another key
if _MKL is not None:
    MKL_GEMMS = {np.dtype(np.float32): _MKL.cblas_sgemm, np.dtype(np.float64): _MKL.cblas_dgemm}
# MKL's products win on Intel's CPUs only: on AMD's (a Zen with AVX2 here) OpenBLAS's own kernels
# take 0.78x to 1.02x MKL's time on the same products (kernel_variants.py, section 8).
_GEMM = MKL_GEMMS if cpu_vendor() == "GenuineIntel" else {}
BACKEND = "mkl" if _GEMM else "numpy"


def preload():
    """Make MKL load its core and this CPU's kernels (220 MB of mapped libraries) now rather
    than at the first big product: for a process whose children cap their address space (the
    training workers' fork server), so that no job can fail to load them halfway through.

    Not done at import: PyTorch, in a process where MKL's core is loaded before its own first
    product, computes its products with this sequential MKL (one thread, other rounding)."""
    for dtype, gemm in _GEMM.items():
        a, b, c = (np.ones(1, dtype) for _ in range(3))
        args = (a.ctypes.data, 1, b.ctypes.data, 1, 0.0, c.ctypes.data, 1)
        gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, 1, 1, 1, 1.0, *args)


def mkl_wins(m, k, n):
    """Whether an (m, k) @ (k, n) product runs faster on MKL than on NumPy (the rule of
    MKL_MIN_SIDE and MKL_MIN_MACS)."""
    return min(m, n) >= MKL_MIN_SIDE and m * n * k >= MKL_MIN_MACS


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
    """``a @ b`` of 2-D arrays, written into ``out`` if given (added to it with ``accumulate``),
    or of two equally long stacks of them (3-D), pair by pair. Returns the result; operands
    that do not fit raise NumPy's error."""
    if out is None:
        out = np.empty((*a.shape[:-1], b.shape[-1]), np.result_type(a, b))
        accumulate = False
    if a.ndim == b.ndim == out.ndim == 3 and len(a) == len(b) == len(out):
        for k in range(len(a)):
            matmul(a[k], b[k], out[k], accumulate)
    elif not _by_mkl(a, b, out, accumulate):
        if accumulate:
            out += a @ b
        else:
            np.matmul(a, b, out=out)
    return out


def _by_mkl(a, b, out, accumulate):
    """Compute ``out (+)= a @ b`` with MKL if it takes these arrays as they are; False if not."""
    gemm = _GEMM.get(a.dtype)
    if gemm is None or not a.ndim == b.ndim == out.ndim == 2:
        return False
    (m, k), n = a.shape, b.shape[1]
    if b.shape[0] != k or out.shape != (m, n) or not a.dtype == b.dtype == out.dtype:
        return False
    if not mkl_wins(m, k, n):
        return False
    if not (out.flags.writeable and a.flags.aligned and b.flags.aligned and out.flags.aligned):
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
