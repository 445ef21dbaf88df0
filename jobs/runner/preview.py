"""The preview worker's RQ entry point: run a preview's few instructions through every stage in-process,
with its checkpoint in a temporary directory, and store what a caller needs to judge the recipe."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

from jobs.blobs.artifacts import Artifacts
from jobs.blobs.history import HistoryGone, earlier_instructions, reference_index
from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import cost
from jobs.method.engine import execute
from jobs.method.recipe import Execution, Recipe
from jobs.method.run import Run
from jobs.method.seed_tasks import parse_jsonl
from jobs.method.stages.classification import SELECTION_STAGE
from jobs.method.transport import EndpointError
from jobs.method.vocabulary import MODES
from jobs.runner import queue
from jobs.settings import Profile, get_settings
from jobs.store import previews
from jobs.store.limits import SharedGate

log = structlog.get_logger(__name__)


def run_preview(preview_id: str) -> None:
    settings = get_settings()
    r = queue.connect(settings)
    preview = previews.get(r, preview_id)
    if preview is None or preview["state"] != "queued":  # expired, or already run
        return
    previews.update(r, preview_id, state="running")
    started = time.monotonic()
    try:
        result = _run(preview, settings)
    except EndpointError as e:
        previews.update(r, preview_id, state="failed", error=f"LLM endpoint: {e}", finished_at=time.time())
        return
    except HistoryGone as e:
        previews.update(r, preview_id, state="failed", error=str(e), finished_at=time.time())
        return
    except Exception as e:
        log.exception("preview_failed", preview_id=preview_id)
        error = f"internal error ({type(e).__name__}); see worker logs"
        previews.update(r, preview_id, state="failed", error=error, finished_at=time.time())
        return
    result["seconds"] = round(time.monotonic() - started, 3)
    previews.update(r, preview_id, state="succeeded", result=result, finished_at=time.time())
    log.info("preview_finished", preview_id=preview_id, seconds=result["seconds"])


def _run(preview: dict[str, Any], settings: Any) -> dict[str, Any]:
    seed_tasks = parse_jsonl(
        Artifacts(settings, patient=True).get_seed_set(preview["team"], preview["seed_set_id"])
    )
    profile = settings.profiles[preview["profile"]]
    # as its job would run (recorded so since previews are; older records are made so here), then online
    # whatever the profile's mode: a preview answers in seconds, a batch in hours
    recipe = Recipe.from_dict(preview["recipe"]).for_endpoint(profile.mode, profile.endpoint.api)
    endpoint = replace(profile.keyed(), mode="online", prices=profile.mode_prices("online"))
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="preview-") as tmp:
        store = FileStore(tmp)
        execution = Execution(concurrency=profile.concurrency)
        artifacts, earlier = Artifacts(settings, patient=True), preview["dedup_against"]
        run = Run(
            f"preview/{preview['id']}",
            seed_tasks,
            recipe,
            endpoint,
            store,
            execution=execution,
            history=lambda: earlier_instructions(artifacts, preview["team"], earlier, settings.work_dir),
            references=lambda: reference_index(
                artifacts, preview["team"], preview["decontaminate_against"], recipe
            ),
            embeddings=profile.keyed_embeddings(),
        )
        gate = partial(SharedGate.connect, settings.redis_url, profile.endpoint, settings.redis_retry_seconds)
        execute(run, gate=gate)
        decisions = [d.to_dict() for d in store.decisions()]
    cp = run.checkpoint
    texts = {t.id: t.instruction for t in seed_tasks} | {k["id"]: k["text"] for k in cp.instructions}
    candidates = []
    for d in decisions:
        if d["stage"] == "instruction":
            nearest = (d.get("detail") or {}).get("nearest_id")
            candidates.append({**d, "nearest_text": texts.get(nearest) if nearest else None})
    # instances by their instruction, in order, with the LLM judge's score and rationale when it ran
    instances: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in decisions:
        if d["stage"] == "instance":
            judged = {k: v for k, v in (d.get("detail") or {}).items() if k.startswith("judge_")}
            shown = {"input": d.get("input"), "output": d["text"], **judged}
            if d["verdict"] == "dropped":
                shown = {"rule": d["rule"], **shown}
            instances.setdefault((d["source"]["instruction_id"], d["verdict"]), []).append(shown)
    kept = [
        {
            "id": k["id"],
            "text": k["text"],
            "classification": cp.classification.get(k["id"]),
            "instances": instances.get((k["id"], "kept"), []),
            "dropped_instances": instances.get((k["id"], "dropped"), []),
        }
        for k in cp.instructions
    ]
    prompt, completion = Counter(run.usage.prompt_tokens), Counter(run.usage.completion_tokens)
    tokens = {
        "prompt": sum(prompt.values()),
        "completion": sum(completion.values()),
        "prompt_by_stage": dict(prompt),
        "completion_by_stage": dict(completion),
        "embeddings": run.usage.embedding_tokens,  # semantic deduplication's, priced apart
    }
    return {
        "candidates": candidates,
        "kept": kept,
        "tokens": tokens,
        "requests": sum(run.usage.requests.values()),
        "cost": run.accounting.cost(),
        "estimate": _estimate(tokens, len(cp.instructions), preview["full_num_instructions"], profile),
        "stop_reason": cp.stop_reason,
    }


def _estimate(tokens: dict[str, Any], kept: int, full: int | None, profile: Profile) -> dict[str, Any] | None:
    """The full job at the preview's tokens per kept instruction (every stage's tokens over the kept),
    plus what a run spends once whatever its size (`once`: classification_method auto's requests),
    priced in the profile's mode (`cost`) and in both (`cost_by_mode`: online, and batch through the
    provider's Batch API). Embedding tokens (semantic deduplication; the seeds' included, a slight
    overestimate) count per instruction, at the embedding endpoint's price, online in either mode."""
    if not kept:
        return None
    once = {f"{k}_tokens": tokens[f"{k}_by_stage"].get(SELECTION_STAGE, 0) for k in ("prompt", "completion")}
    per = {
        "prompt_tokens": (tokens["prompt"] - once["prompt_tokens"]) / kept,
        "completion_tokens": (tokens["completion"] - once["completion_tokens"]) / kept,
    }
    embedding_price = profile.embeddings.price if profile.embeddings else None
    per_embedding = tokens.get("embeddings", 0) / kept

    def priced(prompt: float, completion: float, embedding: float = 0.0) -> dict[str, Any]:
        by_mode = {}
        for mode in MODES:
            prices = profile.mode_prices(mode)
            extra = embedding * (embedding_price or 0.0) / 1_000_000
            by_mode[mode] = None if prices is None else round(cost(prompt, completion, prices) + extra, 6)
        return {"cost": by_mode[profile.mode], "cost_by_mode": by_mode}

    out: dict[str, Any] = {
        "per_instruction": {
            **{k: round(v, 1) for k, v in per.items()},
            **({"embedding_tokens": round(per_embedding, 1)} if per_embedding else {}),
            **priced(*per.values(), per_embedding),
        },
        "once": {**once, **priced(*once.values())},
        "currency": profile.endpoint.currency if profile.prices else None,
        "mode": profile.mode,
        "full_job": None,
    }
    if full:
        prompt = per["prompt_tokens"] * full + once["prompt_tokens"]
        completion = per["completion_tokens"] * full + once["completion_tokens"]
        out["full_job"] = {
            "num_instructions": full,
            "prompt_tokens": round(prompt),
            "completion_tokens": round(completion),
            **({"embedding_tokens": round(per_embedding * full)} if per_embedding else {}),
            **priced(prompt, completion, per_embedding * full),
        }
    return out
