# syntax=docker/dockerfile:1
# The API: FastAPI + the shared service code, without torch (its Python packages: ~130 MB, measured
# in a venv from requirements-api.txt; a worker image carries several GB of torch and CUDA).
# Build from the repository root:  docker build -f deploy/api.Dockerfile -t sjc-api .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY deploy/requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt

# The package itself without its dependencies: the API imports only api/, sjc_service/ and
# sjc_engine's torch-free catalog/config (which reads the embedded model's sjc_model.json).
COPY pyproject.toml README.md ./
COPY api ./api
COPY sjc_service ./sjc_service
COPY sjc_engine ./sjc_engine
COPY sjc_client ./sjc_client
# worker/webhooks.py: the webhook worker runs from this image (it needs no torch)
COPY worker ./worker
RUN pip install --no-deps . && rm -rf /src

RUN useradd --create-home --uid 10001 sjc
USER sjc
WORKDIR /home/sjc
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*"]
