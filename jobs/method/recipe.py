"""One generation run's parameters (the recipe). Deployment settings live in jobs.settings."""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from api_spec.vocabulary import CLASSIFICATION_METHODS, EXPORT_FORMATS

STAGES = ("instructions", "classification", "instances")

# The paper's keyword blacklist (bootstrap_instructions.py), matched as whole words, case-insensitively.
PAPER_BLACKLIST = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)
# Stanford Alpaca's additions.
ALPACA_BLACKLIST = (*PAPER_BLACKLIST, "video", "audio", "music", "flowchart", "diagram")


@dataclass(frozen=True)
class Decoding:
    max_tokens: int
    temperature: float
    top_p: float
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    n: int = 1


def paper_decoding(max_instances: int = 5) -> dict[str, Decoding]:
    """The reference code's decoding parameters per stage."""
    return {
        "instructions": Decoding(1024, 0.7, 0.5, 0.0, 2.0, ("\n\n", "\n16", "16.", "16 .")),
        "classification": Decoding(3, 0.0, 0.0, 0.0, 0.0, ("\n", "Task")),
        # 300 tokens when the request is for a classification task, 350 otherwise (as the reference).
        "instances": Decoding(300, 0.0, 0.0, 0.0, 1.5, (f"Example {max_instances + 1}", "Task:")),
    }


@dataclass(frozen=True)
class GenerationConfig:
    num_instructions: int = 100
    seed: int = 42
    # Requests in flight at once. Throughput only: it never changes the result.
    concurrency: int = 2
    # Prompt i samples machine instructions from the pool as it stood after prompts < i - window + 1
    # were filtered, so up to `window` prompts can be in flight. Part of the recipe (like the paper's
    # batch of 5): the same window and seed give the same prompts.
    window: int = 8
    prompt_instructions: int = 8
    prompt_machine_instructions: int = 2
    classification_only: bool = False
    # How stage 2 decides Yes/No (jobs.method.classification): "text" is the paper's greedy answer;
    # "logprobs" compares the two labels' log-probabilities; "calibrated" first divides out the model's
    # bias on content-free inputs; "fitted" thresholds the calibrated margin where it best separates the
    # seed tasks left out of the demonstrations; "auto" is "fitted" where the endpoint gives
    # log-probabilities, else "text" (benchmarks/classification.py measures them).
    classification_method: str = "auto"
    similarity_threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    keyword_blacklist: tuple[str, ...] = PAPER_BLACKLIST
    max_instances_per_task: int = 5
    # Stage-1 request budget; None means 20 + 10 * num_instructions.
    max_requests: int | None = None
    # Whole-run budgets (tokens of every stage; cost at the endpoint's prices); None: no cap.
    max_tokens: int | None = None
    max_cost: float | None = None
    include_seed_tasks: bool = False
    export_formats: tuple[str, ...] = EXPORT_FORMATS
    decoding: dict[str, Decoding] = field(default_factory=paper_decoding)
    # Characters of seed-task demonstrations in the stage 2 and 3 prompts (fits a 4,096-token context).
    demo_chars: int = 4_000
    # Commit the checkpoint after this many handled prompts or completions.
    checkpoint_every: int = 4

    def derived_seed(self, *parts: object) -> int:
        """A 31-bit seed for one purpose (a prompt, a request): stable across runs, processes and Pythons."""
        digest = hashlib.sha256(":".join(map(str, (self.seed, *parts))).encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def rng(self, *parts: object) -> random.Random:
        return random.Random(self.derived_seed(*parts))

    @property
    def request_budget(self) -> int:
        return self.max_requests if self.max_requests is not None else 20 + 10 * self.num_instructions

    def validate(self) -> GenerationConfig:
        problems = []
        if self.num_instructions < 1:
            problems.append("num_instructions must be at least 1")
        if self.concurrency < 1 or self.window < 1:
            problems.append("concurrency and window must be at least 1")
        if not 0 <= self.prompt_machine_instructions < self.prompt_instructions:
            problems.append("prompt_machine_instructions must be below prompt_instructions")
        if not 0.0 <= self.similarity_threshold <= 1.0:
            problems.append("similarity_threshold must be within [0, 1]")
        if unknown := set(self.export_formats) - set(EXPORT_FORMATS):
            problems.append(f"unknown export formats: {sorted(unknown)}")
        if self.classification_method not in CLASSIFICATION_METHODS:
            problems.append(f"classification_method must be one of {CLASSIFICATION_METHODS}")
        if set(self.decoding) != set(STAGES):
            problems.append(f"decoding must give exactly the stages {STAGES}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["keyword_blacklist"] = list(self.keyword_blacklist)
        out["export_formats"] = list(self.export_formats)
        out["decoding"] = {k: {**asdict(v), "stop": list(v.stop)} for k, v in self.decoding.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        if unknown := set(data) - known:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        kwargs = dict(data)
        for name in ("keyword_blacklist", "export_formats"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        if "decoding" in kwargs:
            base = paper_decoding(kwargs.get("max_instances_per_task", 5))
            kwargs["decoding"] = {
                stage: replace(base[stage], **{k: tuple(v) if k == "stop" else v for k, v in over.items()})
                for stage, over in {**{s: {} for s in base}, **kwargs["decoding"]}.items()
            }
        elif "max_instances_per_task" in kwargs:
            kwargs["decoding"] = paper_decoding(kwargs["max_instances_per_task"])
        return cls(**kwargs).validate()
