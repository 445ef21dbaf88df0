"""Settings module for RQ workers: `rq worker -c jobs.rq_settings` (Redis, queue and JSON logs from env)."""

from jobs import logs
from jobs.settings import get_settings

_settings = get_settings()
REDIS_URL = _settings.redis_url
QUEUES = [_settings.queue]
DICT_CONFIG = logs.dict_config(_settings.log_level)
logs.configure_structlog()
