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
