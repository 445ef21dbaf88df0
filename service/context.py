"""What the views share: settings, the Redis connection, S3 artifacts, and the caller's team."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flask import current_app, g
from redis import Redis

from jobs.blobs.artifacts import Artifacts
from jobs.settings import Settings
from jobs.store import connection

DEFAULT_TEAM = "default"


@dataclass
class Services:
    settings: Settings

    @cached_property
    def redis(self) -> Redis:
        return connection.connect(self.settings.redis_url, socket_timeout=10, socket_connect_timeout=5)

    @cached_property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.settings)


def services() -> Services:
    return current_app.extensions["selfinstruct"]


def team() -> str:
    return g.get("team", DEFAULT_TEAM)
