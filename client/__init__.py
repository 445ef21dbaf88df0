"""A Python client for selfinstruct-service, and the `selfinstruct` command for CI pipelines."""

from client.api import ApiError, Client

__all__ = ["ApiError", "Client"]
