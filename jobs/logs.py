"""Structured JSON logs, one line an event, with the job and request ids bound in context."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def formatter() -> structlog.stdlib.ProcessorFormatter:
    """JSON lines for structlog events and for plain logging records (rq, gunicorn, libraries)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure_structlog() -> None:
    structlog.configure(
        processors=[*SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def dict_config(level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig that sends everything through formatter() to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "jobs.logs.formatter"}},
        "handlers": {
            "out": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "rq": {"handlers": ["out"], "level": level, "propagate": False},
            "httpx": {"level": "WARNING"},
        },
        "root": {"handlers": ["out"], "level": level},
    }


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Route structlog and the standard logging module to JSON lines."""
    configure_structlog()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
