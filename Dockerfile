# One image for the API (gunicorn) and the workers (python -m jobs.runner.worker).
#   docker build -t selfinstruct-service .
#   docker run -p 8000:8000 selfinstruct-service                          # API (env PORT, GUNICORN_WORKERS)
#   docker run --no-healthcheck selfinstruct-service python -m jobs.runner.worker  # worker
# The embedded local model is not in the image: point LLM_PROFILES at an OpenAI-compatible endpoint.
# BASE_IMAGE: any Debian bookworm with python 3.11 as `python` (tests/test_image.py builds on a local one).

ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml ./
# The runtime dependencies of pyproject.toml at the versions pinned in constraints.txt, in a layer that
# only a change of those two files rebuilds.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -c constraints.txt -r requirements.txt \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="selfinstruct-service" \
      org.opencontainers.image.source="https://example.invalid/selfinstruct-service" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    WORK_DIR=/tmp
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/venv /opt/venv
# The code runs from the working directory (on sys.path for gunicorn and `python -m`), owned by root.
WORKDIR /app
COPY api_spec ./api_spec
COPY client ./client
COPY jobs ./jobs
COPY service ./service
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4).status != 200)"]
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec gunicorn -c service/gunicorn_conf.py -w ${GUNICORN_WORKERS:-2} -b 0.0.0.0:${PORT:-8000} 'service.app:create_app()'"]
