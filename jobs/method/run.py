"""A run's live state: its checkpoint, decisions not yet committed, accounting, progress and export.

The stages (bootstrap, classification, instances) work on a Run; jobs.method.engine drives them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from jobs import __version__
from jobs.method import cost, exports, metrics
from jobs.method.chat import ChatPrompts
from jobs.method.checkpoint import Checkpoint, Store
from jobs.method.decisions import Decision
from jobs.method.llm import Endpoint, Usage
from jobs.method.prompts import Prompts
from jobs.method.recipe import GenerationConfig
from jobs.method.seed_tasks import SeedTask, content_hash

log = structlog.get_logger(__name__)

STAGE_ORDER = ("instructions", "classification", "instances", "export", "done")
Progress = Callable[[dict[str, Any]], None]


class Canceled(Exception):
    """The run was asked to stop; everything handled so far is committed."""


class BudgetReached(Canceled):
    """The run spent its token or cost budget (`reason`: token_budget or cost_budget); committed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"the run reached its budget ({reason})")


def _first_checkpoint(given: list[dict[str, str]] | None) -> Checkpoint:
    """A new run's state. Given instructions ({"id", "text"}) replace stage 1: the run starts at
    classification with exactly those, in order."""
    if given is None:
        return Checkpoint()
    kept = [{"id": g["id"], "text": g["text"], "given": True} for g in given]
    return Checkpoint(stage="classification", instructions=kept, stop_reason="given_instructions")


class Run:
    """The live state of one run: its checkpoint, the decisions not yet committed, and accounting."""

    def __init__(
        self,
        run_id: str,
        seed_tasks: list[SeedTask],
        config: GenerationConfig,
        endpoint: Endpoint,
        store: Store,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        spent_elsewhere: Callable[[], tuple[int, int]] | None = None,
        given: list[dict[str, str]] | None = None,
    ):
        """`spent_elsewhere`: prompt and completion tokens the job's other runs (chunks) spent, which
        count against the whole-job budgets too."""
        self.run_id = run_id
        self.seed_tasks = seed_tasks
        self.config = config.validate()
        if config.classification_only and not any(t.is_classification for t in seed_tasks):
            raise ValueError("classification_only needs classification tasks in the seed set")
        self.endpoint = endpoint
        self.store = store
        self.checkpoint = store.load() or _first_checkpoint(given)
        self.usage = Usage.from_dict(self.checkpoint.usage) if self.checkpoint.usage else Usage()
        self.prompts = (
            ChatPrompts(
                seed_tasks,
                config.seed,
                config.demo_chars,
                endpoint.response_format is not None,
                config.max_instances_per_task,
            )
            if endpoint.api == "chat"
            else Prompts(seed_tasks, config.seed, config.demo_chars)
        )
        self._progress = progress
        self._should_stop = should_stop
        self._spent_elsewhere = spent_elsewhere
        self._pending: list[Decision] = []
        self._since_commit = 0
        self._elapsed_before = self.checkpoint.elapsed
        self._session_start = time.monotonic()
        self.stage_total = 0
        self.stage_done = 0

    # --- bookkeeping used by the stages ---

    def record(self, decision: Decision) -> None:
        self._pending.append(decision)
        metrics.CANDIDATES.labels(decision.stage, decision.verdict, decision.rule).inc()
        self.count(decision.stage, decision.rule)

    def count(self, stage: str, key: str) -> None:
        counts = self.checkpoint.counts.setdefault(stage, {})
        counts[key] = counts.get(key, 0) + 1

    def handled(self, progress: int | None = None, force: bool = False) -> None:
        """One prompt or completion fully handled: commit every few, report progress, honour a stop.

        `progress` sets the stage's done count (default: one more)."""
        self.stage_done = self.stage_done + 1 if progress is None else progress
        self._since_commit += 1
        if force or self._since_commit >= self.config.checkpoint_every:
            self.commit()
        self.report()
        if self._should_stop and self._should_stop():
            self.commit()
            raise Canceled("the run was asked to stop")
        self.check_budget()

    def tokens_spent(self) -> tuple[int, int]:
        """Prompt and completion tokens of the whole job so far (this run and the others)."""
        prompt = sum(self.usage.prompt_tokens.values())
        completion = sum(self.usage.completion_tokens.values())
        if self._spent_elsewhere:
            more = self._spent_elsewhere()
            prompt, completion = prompt + more[0], completion + more[1]
        return prompt, completion

    def budget_reached(self) -> str | None:
        cfg = self.config
        if cfg.max_tokens is None and (cfg.max_cost is None or self.endpoint.prices is None):
            return None
        prompt, completion = self.tokens_spent()
        if cfg.max_tokens is not None and prompt + completion >= cfg.max_tokens:
            return "token_budget"
        prices = self.endpoint.prices
        if (
            cfg.max_cost is not None
            and prices is not None
            and cost.amount(prompt, completion, prices) >= cfg.max_cost
        ):
            return "cost_budget"
        return None

    def check_budget(self) -> None:
        """Stop the run (committed, its stop reason recorded) once a whole-job budget is spent."""
        if reason := self.budget_reached():
            self.checkpoint.stop_reason = reason
            self.commit()
            raise BudgetReached(reason)

    def commit(self) -> None:
        cp = self.checkpoint
        cp.usage = self.usage.to_dict()
        cp.elapsed = self.elapsed
        cp.decisions += len(self._pending)
        self.store.commit(cp, self._pending)
        self._pending = []
        self._since_commit = 0

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._session_start

    def set_elapsed(self, seconds: float) -> None:
        """Wall time measured elsewhere (a job whose stages ran in several processes)."""
        self._elapsed_before, self._session_start = seconds, time.monotonic()

    def report(self) -> None:
        if self._progress:
            self._progress(self.progress())

    def progress(self) -> dict[str, Any]:
        cp = self.checkpoint
        return {
            "stage": cp.stage,
            "stage_done": self.stage_done,
            "stage_total": self.stage_total,
            "instructions_kept": len(cp.instructions),
            "instructions_target": self.config.num_instructions,
            "instances_kept": cp.instances_kept(),  # O(new entries): progress runs on every handled item
            "prompt_tokens": sum(self.usage.prompt_tokens.values()),
            "completion_tokens": sum(self.usage.completion_tokens.values()),
            "requests": sum(self.usage.requests.values()),
            "elapsed_seconds": round(self.elapsed, 3),
            "dropped": self.usage.dropped,  # sampling parameters the endpoint refused
            "prompt_by_stage": dict(self.usage.prompt_tokens),
            "completion_by_stage": dict(self.usage.completion_tokens),
            "errors": dict(self.usage.errors),  # failed attempts by kind, each retried or fatal
        }

    def start_stage(self, total: int) -> None:
        self.check_budget()  # a budget spent in an earlier stage: the next one does not start
        self.stage_total, self.stage_done = total, 0
        self.report()

    def advance(self, stage: str) -> None:
        self.checkpoint.stage = stage
        self.commit()
        log.info("stage", run_id=self.run_id, stage=stage)

    # --- results ---

    def stats(self) -> dict[str, Any]:
        cp = self.checkpoint
        usage = self.usage.to_dict()
        wall = self.elapsed
        counts = {stage: dict(sorted(rules.items())) for stage, rules in sorted(cp.counts.items())}
        return {
            "engine_version": __version__,
            "stop_reason": cp.stop_reason,
            "instructions_kept": len(cp.instructions),
            "instances_kept": sum(len(v) for v in cp.instances.values()),
            "tasks_with_instances": sum(1 for v in cp.instances.values() if v),
            "verdicts": {s: c for s, c in counts.items() if s in ("instruction", "instance")},
            "classification": counts.get("classification", {}),
            "classification_method": self.classification_method(),
            "truncated_responses": cp.truncated_responses,
            "requests": usage["requests"],
            "retries": usage["retries"],
            "failed_attempts": usage["errors"],
            "tokens": {
                "prompt": sum(usage["prompt_tokens"].values()),
                "completion": sum(usage["completion_tokens"].values()),
                "prompt_by_stage": usage["prompt_tokens"],
                "completion_by_stage": usage["completion_tokens"],
            },
            "wasted": cp.wasted,
            # sampling parameters the endpoint refused and the run went on without
            "dropped_parameters": usage.get("dropped", {}),
            "wall_seconds": round(wall, 3),
            "endpoint_busy_seconds": usage["busy_seconds"],
            "endpoint_busy_fraction": round(usage["busy_seconds"] / wall, 4) if wall > 0 else 0.0,
            "cost": self.cost(),
        }

    def cost(self) -> dict[str, Any] | None:
        """What this run's tokens cost at the endpoint's prices (None: the profile has no prices)."""
        if self.endpoint.prices is None:
            return None
        usage, endpoint = self.usage, self.endpoint
        return cost.summary(usage.prompt_tokens, usage.completion_tokens, endpoint.prices, endpoint.currency)

    def export(self, out_dir: str | Path, partial: bool = False) -> dict[str, int]:
        """Write the dataset files into out_dir and mark the run done; returns records per file.

        `partial` exports what a stopped run made so far (its stage is left as it was)."""
        if not partial and self.checkpoint.stage not in ("export", "done"):
            raise RuntimeError(f"the run is at stage {self.checkpoint.stage!r}, not ready to export")
        records = exports.write(
            out_dir,
            self.checkpoint,
            self.seed_tasks,
            self.config,
            self.store.decisions(),
            self.stats(),
            self.run_record(),
        )
        if not partial:
            self.advance("done")
        return records

    def run_record(self) -> dict[str, Any]:
        """run.json: everything needed to run it again."""
        return {
            "run_id": self.run_id,
            "engine_version": __version__,
            "seed_set": {"sha256": content_hash(self.seed_tasks), "tasks": len(self.seed_tasks)},
            "instance_demonstrations": self.prompts.demonstrations,
            "random_seed": self.config.seed,
            "endpoint": self.endpoint.public(),
            "config": self.config.to_dict(),
            "classification_method": self.classification_method(),
        }

    def classification_method(self) -> dict[str, Any]:
        """How stage 2 decided: answers per method, why any fell back to text, the shift and threshold."""
        methods: dict[str, int] = {}
        fallbacks: dict[str, int] = {}
        shared: dict[str, Any] = {}
        for answer in self.checkpoint.classification.values():
            method = answer.get("method", "text")
            methods[method] = methods.get(method, 0) + 1
            if reason := answer.get("fallback"):
                fallbacks[reason] = fallbacks.get(reason, 0) + 1
            if not shared and "shift" in answer:
                shared = {k: answer[k] for k in ("shift", "threshold") if k in answer}
        return {"methods": methods, "fallbacks": fallbacks, **shared}
