"""gunicorn settings: JSON logs through the app's formatter, request limits from the settings;
everything else from the command line/env."""

import os

from jobs.logs import dict_config
from jobs.settings import Settings

logconfig_dict = dict_config(os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"].update(
    {"gunicorn.error": {"handlers": ["out"], "level": "INFO", "propagate": False}}
)
accesslog = None  # the app logs one JSON line a request, with its request id
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# Threads a worker (gthread): a browser opens connections ahead of need and may leave them idle; with
# one thread each, a few idle connections hold every worker until `timeout`.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Close each connection after its response, as sync workers do: a client reusing a kept-alive connection
# the server is just closing gets a disconnect instead of an answer (POSTs are not retried).
keepalive = 0
graceful_timeout = 20

# gunicorn answers what breaks these limits itself, before the app sees the request, and not as a
# problem: its request-line limit is set above the app's URL limit (MAX_URL_CHARS) so that a long URL
# gets the app's 414 problem; only a request line beyond gunicorn's (at most 8190) gets its own page.
_settings = Settings.from_env()
limit_request_line = _settings.gunicorn_limit_request_line
limit_request_fields = _settings.gunicorn_limit_request_fields
limit_request_field_size = _settings.gunicorn_limit_request_field_size
# "OPTIONS " + URL + " HTTP/1.1" must fit, or gunicorn would answer first
if 0 < limit_request_line < _settings.max_url_chars + len("OPTIONS  HTTP/1.1"):
    raise SystemExit(
        f"GUNICORN_LIMIT_REQUEST_LINE ({limit_request_line}) must exceed MAX_URL_CHARS "
        f"({_settings.max_url_chars}) by the method and protocol (17 characters)"
    )


def child_exit(server, worker):
    """Drop a dead worker's live metrics (multiprocess mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
