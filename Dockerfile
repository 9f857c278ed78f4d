# cnn-service: the FastAPI service and its NumPy CNN library in one image.
#
#   docker build -t cnn-service .
#   docker run --init -p 127.0.0.1:8000:8000 -v cnn-data:/data cnn-service
#
# or `docker compose up --build` with docker-compose.yml beside this file.
#
# Run it with an init process as PID 1 (`docker run --init`, `init: true` in compose):
# training runs in worker processes, and the init forwards `docker stop`'s SIGTERM to
# uvicorn and reaps every exited child. On SIGTERM the server checkpoints running jobs
# and exits within 8 s (--timeout-graceful-shutdown), inside Docker's default 10 s stop
# timeout; the jobs resume from their checkpoint when the container starts again.
#
# Everything the service keeps (jobs database, datasets, models, checkpoints) lives in
# the /data volume: mount a named volume or a host directory there to keep it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user that owns only the data directory; the code stays root-owned.
RUN groupadd --system --gid 10001 cnn \
    && useradd --system --uid 10001 --gid cnn --create-home --home-dir /home/cnn \
        --shell /usr/sbin/nologin cnn \
    && mkdir /data \
    && chown cnn:cnn /data

WORKDIR /srv/cnn-service

# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml
# changes: the list is read from [project].dependencies, so it is never duplicated.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code, installed without dependencies (they are all in the layer above).
COPY README.md ./
COPY cnn_core/ cnn_core/
COPY app/ app/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

USER 10001:10001

# Build matplotlib's font cache now rather than on the first cost-curve request.
RUN python -c "import matplotlib.font_manager"

ENV CNN_DATA_DIR=/data \
    CNN_HOST=0.0.0.0 \
    CNN_PORT=8000 \
    MPLBACKEND=Agg

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

STOPSIGNAL SIGTERM

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "8", \
     "--http", "app.limits:HeaderTimeoutH11Protocol"]
