"""/ui/: the web page to watch jobs and explore their decisions.

The pages are static shells: they hold no data and no secret, so they are served without an API key.
Their script (service/static/ui/app.js) keeps the key in the browser's sessionStorage and calls /v1
with it in the Authorization header; everything it shows is put in the page as text, never as HTML.
A plain Flask blueprint, not a flask-smorest one: these routes are not part of the API's spec.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for

PREFIX = "/ui"
# No inline script or style anywhere: injected markup could neither run nor restyle the page.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

blp = Blueprint(
    "ui",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static/ui",
    static_url_path="/static",
)


def serves(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@blp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@blp.route("")
def _slash() -> Response:
    return redirect(url_for("ui.jobs"))  # type: ignore[return-value]


@blp.route("/")
def jobs() -> str:
    return render_template("ui/jobs.html", page="jobs")


@blp.route("/jobs/<job_id>")
def job(job_id: str) -> str:
    return render_template("ui/job.html", page="job", job_id=job_id)


@blp.route("/jobs/<job_id>/decisions")
def decisions(job_id: str) -> str:
    return render_template("ui/decisions.html", page="decisions", job_id=job_id)


@blp.route("/jobs/<job_id>/decisions/<decision_id>")
def decision(job_id: str, decision_id: str) -> str:
    return render_template("ui/decision.html", page="decision", job_id=job_id, decision_id=decision_id)
