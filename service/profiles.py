"""/v1/profiles: the LLM endpoints the operator offers, by name (never their URLs or keys)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from api_spec.profiles import ProfileSchema
from jobs.method.endpoint import Prices
from service.context import services

blp = Blueprint("profiles", __name__, url_prefix="/v1/profiles", description="LLM endpoint profiles.")


def _prices(prices: Prices | None) -> dict[str, float] | None:
    return None if prices is None else {"prompt": prices[0], "completion": prices[1]}


@blp.route("")
class Profiles(MethodView):
    @blp.response(200, ProfileSchema(many=True))
    def get(self) -> list[dict]:
        """Profiles a job may name."""
        settings = services().settings
        return [
            {
                "name": p.name,
                "model": p.endpoint.model,
                "default": p.name == settings.default_profile,
                "api": p.endpoint.api,
                "structured_output": p.endpoint.response_format is not None,
                "price_per_million_tokens": _prices(p.online_prices),
                "currency": p.endpoint.currency,
                "mode": p.mode,
                "batch_price_per_million_tokens": _prices(p.batch_prices),
                "embeddings": None
                if p.embeddings is None
                else {"model": p.embeddings.model, "price_per_million_tokens": p.embeddings.price},
            }
            for p in settings.profiles.values()
        ]
