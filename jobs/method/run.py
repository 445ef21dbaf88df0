"""A run's live state: its checkpoint, the decisions not yet committed, progress and stopping.

The stages (jobs.method.stages) work on a Run; jobs.method.engine drives them. What the run spends is its
accounting (jobs.method.accounting); its dataset is written by jobs.method.outputs.exports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import Counter

from jobs.method.accounting import Accounting
from jobs.method.checkpoint import Checkpoint, Store
from jobs.method.decisions import Decision
from jobs.method.endpoint import EmbeddingEndpoint, Endpoint
from jobs.method.lineage import Carried
from jobs.method.prompts.chat import ChatPrompts
from jobs.method.prompts.layouts import Prompts
from jobs.method.recipe import Execution, Recipe
from jobs.method.seed_tasks import SeedTask
from jobs.method.similarity import ReferenceIndex
from jobs.method.transport import Usage

log = structlog.get_logger(__name__)

CANDIDATES = Counter(
    "selfinstruct_candidates_total", "Decisions, by stage, verdict and rule", ["stage", "verdict", "rule"]
)

STAGE_ORDER = ("instructions", "classification", "instances", "export", "done")
Progress = Callable[[dict[str, Any]], None]
# Earlier jobs' kept instructions, (job id, instruction id, text), in a fixed order: a read-only part of
# the stage-1 pool. Called again whenever stage 1 (re)starts, so it is read, not held.
History = Callable[[], Iterable[tuple[str, str, str]]]


FREE_BATCH = 100  # items that cost no request commit this many times less often (Run.handled)


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
        recipe: Recipe,
        endpoint: Endpoint,
        store: Store,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        spent_elsewhere: Callable[[], tuple[int, int]] | None = None,
        given: list[dict[str, str]] | None = None,
        execution: Execution | None = None,
        history: History | None = None,
        carried: Carried | None = None,
        references: Callable[[], ReferenceIndex | None] | None = None,
        embeddings: EmbeddingEndpoint | None = None,
    ):
        """`recipe` was checked when it was built (Recipe.build); the run carries it out as its endpoint's
        mode and API kind imply (Recipe.for_endpoint). `spent_elsewhere`: see Accounting.
        `history`: earlier jobs' instructions that candidates must not repeat. `carried`: what an
        extension takes over from the job it extends (jobs.method.lineage). `references`: builds the
        index of the reference sets the run's data must not overlap (None: it names none); built once,
        when a stage first asks (`references()`). `embeddings`: where the recipe's semantic_threshold
        gets its embeddings (the profile's embedding endpoint)."""
        self.run_id = run_id
        self.seed_tasks = seed_tasks
        self.recipe = recipe.for_endpoint(endpoint.mode, endpoint.api)
        self.execution = execution or Execution()
        self.history: History = history or (lambda: ())
        self._references = references
        self._reference_index: ReferenceIndex | None = None
        if recipe.classification_only and not any(t.is_classification for t in seed_tasks):
            raise ValueError("classification_only needs classification tasks in the seed set")
        if recipe.semantic_threshold is not None and embeddings is None:
            raise ValueError("semantic_threshold needs an embedding endpoint (the profile has none)")
        self.endpoint = endpoint
        self.embeddings = embeddings
        self.store = store
        self.carried = carried
        loaded = store.load()
        if loaded is None and carried is not None:
            loaded, decisions = carried.seed()
            store.commit(loaded, decisions)  # one step: a crash before it starts over
        self.checkpoint = loaded or _first_checkpoint(given)
        usage = Usage.from_dict(self.checkpoint.usage) if self.checkpoint.usage else Usage()
        price = embeddings.price if embeddings is not None else None
        self.accounting = Accounting(usage, recipe, endpoint, spent_elsewhere, price)
        self.prompts = (
            ChatPrompts(
                seed_tasks,
                recipe.seed,
                recipe.demo_chars,
                endpoint.response_format is not None,
                recipe.max_instances_per_task,
            )
            if endpoint.api == "chat"
            else Prompts(seed_tasks, recipe.seed, recipe.demo_chars)
        )
        self._progress = progress
        self._should_stop = should_stop
        self._pending: list[Decision] = []
        self._since_commit = 0
        self._elapsed_before = self.checkpoint.elapsed
        self._session_start = time.monotonic()
        self.stage_total = 0
        self.stage_done = 0

    @property
    def usage(self) -> Usage:
        return self.accounting.usage

    # --- bookkeeping used by the stages ---

    def record(self, decision: Decision) -> None:
        self._pending.append(decision)
        CANDIDATES.labels(decision.stage, decision.verdict, decision.rule).inc()
        self.count(decision.stage, decision.rule)

    def count(self, stage: str, key: str) -> None:
        counts = self.checkpoint.counts.setdefault(stage, {})
        counts[key] = counts.get(key, 0) + 1

    def handled(self, progress: int | None = None, force: bool = False, free: bool = False) -> None:
        """One prompt or completion fully handled: commit every few, report progress, honour a stop.

        `progress` sets the stage's done count (default: one more). `free`: the item cost no request
        (a knn vote): redone in a moment after a crash, it commits and looks for a stop FREE_BATCH
        times less often."""
        self.stage_done = self.stage_done + 1 if progress is None else progress
        self._since_commit += 1
        if force or self._since_commit >= self.execution.checkpoint_every * (FREE_BATCH if free else 1):
            self.commit()
        elif free:
            return
        self.report()
        if self._should_stop and self._should_stop():
            self.commit()
            raise Canceled("the run was asked to stop")
        self.check_budget()

    def check_budget(self) -> None:
        """Stop the run (committed, its stop reason recorded) once a whole-job budget is spent."""
        if reason := self.accounting.budget_reached():
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

    def references(self) -> ReferenceIndex | None:
        if self._reference_index is None and self._references is not None:
            self._reference_index = self._references()
        return self._reference_index

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
            "instructions_target": self.recipe.num_instructions,
            "instances_kept": cp.instances_kept(),  # O(new entries): progress runs on every handled item
            "prompt_tokens": sum(self.usage.prompt_tokens.values()),
            "completion_tokens": sum(self.usage.completion_tokens.values()),
            "requests": sum(self.usage.requests.values()),
            "elapsed_seconds": round(self.elapsed, 3),
            "dropped": self.usage.dropped,  # sampling parameters the endpoint refused
            "prompt_by_stage": dict(self.usage.prompt_tokens),
            "completion_by_stage": dict(self.usage.completion_tokens),
            "errors": dict(self.usage.errors),  # failed attempts by kind, each retried or fatal
            "rate_limit_waits": self.usage.rate_limit_waits,  # requests held back for a rate limit's reset
            "rate_limit_seconds": round(self.usage.rate_limit_seconds, 3),
        }

    def start_stage(self, total: int) -> None:
        self.check_budget()  # a budget spent in an earlier stage: the next one does not start
        self.stage_total, self.stage_done = total, 0
        self.report()

    def advance(self, stage: str) -> None:
        self.checkpoint.stage = stage
        self.commit()
        log.info("stage", run_id=self.run_id, stage=stage)
