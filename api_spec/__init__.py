"""The HTTP contract: marshmallow schemas, the single source of `openapi.yaml`. No Flask here."""
