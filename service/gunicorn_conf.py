"""gunicorn settings: JSON logs through the app's formatter; everything else from the command line/env."""

import os

from jobs.logs import dict_config

logconfig_dict = dict_config(os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"].update(
    {"gunicorn.error": {"handlers": ["out"], "level": "INFO", "propagate": False}}
)
accesslog = None  # the app logs one JSON line a request, with its request id
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20


def child_exit(server, worker):
    """Drop a dead worker's live metrics (multiprocess mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
