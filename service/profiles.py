"""/v1/profiles: the LLM endpoints the operator offers, by name (never their URLs or keys)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from api_spec.profiles import ProfileSchema
from service.context import services

blp = Blueprint("profiles", __name__, url_prefix="/v1/profiles", description="LLM endpoint profiles.")


@blp.route("")
class Profiles(MethodView):
    @blp.response(200, ProfileSchema(many=True))
    def get(self) -> list[dict]:
        """Profiles a job may name."""
        settings = services().settings
        return [
            {
                "name": p.name,
                "model": p.model,
                "default": p.name == settings.default_profile,
                "api": p.api,
                "structured_output": p.response_format is not None,
                "price_per_million_tokens": p.price_per_million_tokens,
                "currency": p.currency,
                "mode": p.mode,
                "batch_price_per_million_tokens": p.batch_price_per_million_tokens,
            }
            for p in settings.profiles.values()
        ]
