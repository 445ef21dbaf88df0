# One image for the API (gunicorn) and the workers (python -m jobs.worker).
#   docker build -t selfinstruct-service .
#   docker run -p 8000:8000 selfinstruct-service                          # API
#   docker run --no-healthcheck selfinstruct-service python -m jobs.worker  # worker
# The embedded local model is not in the image: point LLM_PROFILES at an OpenAI-compatible endpoint.

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY api_spec ./api_spec
COPY client ./client
COPY jobs ./jobs
COPY service ./service
# runtime dependencies only, at the versions pinned in constraints.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -c constraints.txt . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11.7-slim-bookworm
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
WORKDIR /app
COPY --chown=root:root service/gunicorn_conf.py ./service/gunicorn_conf.py
USER 10001:10001
EXPOSE 8000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec gunicorn -c service/gunicorn_conf.py -w ${GUNICORN_WORKERS:-2} -b 0.0.0.0:8000 'service.app:create_app()'"]
