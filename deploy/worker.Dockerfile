# syntax=docker/dockerfile:1
# A GPU worker: CUDA runtime, torch 2.13.0 (CUDA build), the package with the embedded model inside.
# Build from the repository root:  docker build -f deploy/worker.Dockerfile -t sjc-worker .
# CPU-only variant (docker-compose profile "cpu"):
#   docker build -f deploy/worker.Dockerfile --build-arg BASE_IMAGE=python:3.11-slim-bookworm \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t sjc-worker-cpu .
# Keep the CUDA version of BASE_IMAGE and TORCH_INDEX_URL in step (torch's wheels carry their own
# CUDA libraries; the host needs an NVIDIA driver new enough for them).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# Python (3.12 on Ubuntu 24.04; the slim CPU base already has 3.11) in a virtual environment.
RUN set -eux; \
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# A C compiler for the renderer's CPU kernels (sjc_engine/native/*.c: trilinear lookups and compositing, several
# times faster than the torch fallback on CPU workers). They are built below into $SJC_NATIVE_CACHE; the
# compiler stays so a worker on a CPU of another kind (other -march flags) can build its own.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends gcc libc6-dev; \
    rm -rf /var/lib/apt/lists/*

# torch first, from the index of the wanted CUDA build; the package's torch==2.13.0 pin is then met.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sjc_engine ./sjc_engine
COPY sjc_service ./sjc_service
COPY sjc_client ./sjc_client
COPY worker ./worker
RUN pip install '.[service]' && rm -rf /src \
    && python -c "from sjc_engine.catalog import resolve_model; print(resolve_model('embedded'))"

RUN useradd --create-home --uid 10001 sjc && mkdir -p /work /models /opt/sjc-native \
    && chown sjc /work /opt/sjc-native
USER sjc
WORKDIR /home/sjc
ENV SJC_WORK_DIR=/work \
    SJC_MODEL_DIRS=/models \
    SJC_NATIVE_CACHE=/opt/sjc-native
# The C kernels, built now (fails the image build if they do not): jobs start on the fast path.
RUN python -c "from sjc_engine.native import native_lib; assert native_lib(), 'the C kernels did not build'"
# One worker process per GPU: -c 1. CUDA is initialised in the pool child, never in the parent.
CMD ["python", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "-c", "1", "--loglevel", "INFO"]
