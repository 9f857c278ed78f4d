# cnn-service: the FastAPI service and its NumPy CNN library in one image.
#
#   docker build -t cnn-service .
#   docker run --init -p 127.0.0.1:8000:8000 -v cnn-data:/data cnn-service
#
# or `docker compose up --build` with docker-compose.yml beside this file. The server listens
# on CNN_PORT (8000 unless set with -e CNN_PORT=...), and so does the HEALTHCHECK.
#
# Run it with an init process as PID 1 (`docker run --init`, `init: true` in compose):
# training runs in worker processes, and the init forwards `docker stop`'s SIGTERM to the
# server and reaps every exited child. On SIGTERM the server checkpoints running jobs and
# exits with code 0 well inside Docker's 10 s stop timeout; the jobs resume from their
# checkpoint when the container starts again.
#
# Everything the service keeps (jobs database, datasets, models, checkpoints) lives in
# the /data volume: mount a named volume or a host directory there to keep it.

# Stage `dependencies`: the base and the runtime dependencies, rebuilt only when
# pyproject.toml changes; the image's code goes on top of it.
FROM python:3.11-slim AS dependencies

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user that owns only the data directory; the code stays root-owned.
RUN groupadd --system --gid 10001 cnn \
    && useradd --system --uid 10001 --gid cnn --create-home --home-dir /home/cnn \
        --shell /usr/sbin/nologin cnn \
    && mkdir /data \
    && chown cnn:cnn /data

WORKDIR /srv/cnn-service

# The list is read from [project].dependencies, so it is never duplicated. Then whatever only
# building, testing, type-checking or debugging needs goes: pip's cache and byte-code (cached
# at run time instead, see PYTHONPYCACHEPREFIX), compilers (wheels only), the numpy and
# matplotlib test suites, onnx's backend conformance data (15 MB of test models; the export
# uses only onnx's helpers and checker), numpy's f2py and C headers, type stubs, source maps,
# and fontTools' optional compiled speedups (12 MB; matplotlib calls fontTools only to embed
# fonts in PDF and PostScript, and the pure-Python modules they were compiled from stay).
# Of MKL (cnn_core.gemm), only what its sequential GEMM needs stays: the runtime, core,
# sequential and LP64 interface libraries and the kernels of every CPU family (MKL exits the
# process if its CPU's are missing); its OpenMP and TBB dependencies (288 MB) and its threaded,
# cluster, ILP64, gfortran and vector-math libraries go.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir --only-binary=:all: --no-compile -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && pip uninstall --yes --quiet intel-openmp intel-cmplr-lib-ur tbb tcmlib umf \
    && mkl="$(python -c 'import sys; print(sys.prefix)')/lib/libmkl_" \
    && rm -f "$mkl"*thread* "$mkl"scalapack* "$mkl"blacs* "$mkl"cdft* "$mkl"*ilp64* \
        "$mkl"gf_* "$mkl"vml_* \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find "$site/numpy" "$site/matplotlib" -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf "$site/numpy/f2py" "$site/numpy/_core/include" "$site/numpy/_core/lib" \
        "$site/onnx/backend/test" \
    && find "$site" \( -name '*.pyi' -o -name '*.map' \) -delete \
    && find "$site/fontTools" -name '*.so' -delete \
    && PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/home/cnn/.config/matplotlib \
        python -c "import matplotlib.font_manager" \
    && chown -R cnn:cnn /home/cnn

# The code, run from this folder: nothing to build or install.
FROM dependencies
COPY cnn_core/ cnn_core/
COPY app/ app/

# Byte-code is written on first import into the container's own layer, not the image: a
# container's first start compiles what it imports, its restarts reuse it.
ENV PYTHONPATH=/srv/cnn-service \
    PYTHONPYCACHEPREFIX=/home/cnn/.cache/python \
    CNN_DATA_DIR=/data \
    CNN_HOST=0.0.0.0 \
    CNN_PORT=8000 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/home/cnn/.config/matplotlib

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]

STOPSIGNAL SIGTERM

CMD ["python", "-m", "app.serve"]
