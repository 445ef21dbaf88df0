"""What one run makes (the recipe) and how it is carried out (the execution settings).

A recipe is checked once, where it is made (Recipe.build: the API's schema, previews and the CLI all
use it), then travels as its canonical dict (Recipe.to_dict) and is loaded without checks
(Recipe.from_dict). Deployment settings live in jobs.settings."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from jobs.method.vocabulary import CLASSIFICATION_METHODS, EXPORT_FORMATS

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


# What a recipe recorded before these fields existed (a job's record, a run.json) ran with.
BEFORE_FIELDS = {"instance_followup": False, "auto_selects": False}

# The fields a request (the API, a preview, the CLI) may set; the others keep their defaults.
REQUEST_FIELDS = (
    "num_instructions",
    "seed",
    "window",
    "round_size",
    "classification_only",
    "classification_method",
    "include_seed_tasks",
    "instance_followup",
    "similarity_threshold",
    "contamination_ngram",
    "contamination_threshold",
    "judge_threshold",
    "semantic_threshold",
    "max_requests",
    "max_tokens",
    "max_cost",
    "export_formats",
    "decoding",
)


# The longest run of words the decontamination rule may ask to be shared.
MAX_NGRAM = 64
# Stage-1 prompts a batch-mode round sends when the recipe names no round_size.
BATCH_ROUND = 200


class RecipeError(ValueError):
    """A recipe that cannot run; `problems` are (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


@dataclass(frozen=True)
class Execution:
    """How a run is carried out. Throughput only: the same recipe gives the same dataset whatever these
    are (the operator's profile sets the concurrency; the CLI's flags both)."""

    concurrency: int = 2  # requests in flight at once
    checkpoint_every: int = 4  # commit the checkpoint after this many handled prompts or completions

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.checkpoint_every < 1:
            raise ValueError("concurrency and checkpoint_every must be at least 1")


@dataclass(frozen=True)
class Recipe:
    num_instructions: int = 100
    seed: int = 42
    # Prompt i samples machine instructions from the pool as it stood after prompts < i - window + 1
    # were filtered, so up to `window` prompts can be in flight. Part of the recipe (like the paper's
    # batch of 5): the same window and seed give the same prompts.
    window: int = 32
    # Stage 1 in rounds of this many prompts instead: every prompt of a round samples the pool as it
    # stood when the round began. A batch-mode run's rounds are its batches (for_endpoint); an online run
    # with the same round size makes the same dataset.
    round_size: int | None = None
    prompt_instructions: int = 8
    prompt_machine_instructions: int = 2
    classification_only: bool = False
    # How stage 2 decides Yes/No (jobs.method.stages.classification): "text" is the paper's greedy answer;
    # "logprobs" compares the two labels' log-probabilities; "calibrated" first divides out the model's
    # bias on content-free inputs; "fitted" thresholds the calibrated margin where it best separates the
    # seed tasks left out of the demonstrations; "knn" votes with the seed tasks nearest in wording
    # (TF-IDF) and asks the model nothing; "auto" asks the run's own endpoint about the seed tasks left
    # out of the demonstrations and takes the method that answers them best (benchmarks/classification.py
    # measures them all, auto included).
    classification_method: str = "auto"
    # "auto" chooses per endpoint (recorded so since it does; a record without this field meant knn)
    auto_selects: bool = True
    similarity_threshold: float = 0.7
    # Against the reference sets a job names (decontaminate_against): an instruction or instance sharing a
    # run of this many words with a reference item is dropped (0: no such rule; 13 as GPT-3's and NeMo
    # Curator's), as is one whose ROUGE-L against an item is above the threshold (None: no such rule).
    contamination_ngram: int = 13
    contamination_threshold: float | None = 0.7
    # The LLM judge (jobs.method.prompts.judge): every instance the filters keep is scored 1-5 by the
    # run's endpoint, and one scored below this is dropped (None: no judge; 1: scores, drops none).
    judge_threshold: int | None = None
    # Near-duplicates by meaning, beside ROUGE-L: a candidate whose embedding's cosine with a pool item's
    # is above this is dropped (None: not compared; needs a profile with an embedding endpoint).
    semantic_threshold: float | None = None
    min_words: int = 4
    max_words: int = 150
    keyword_blacklist: tuple[str, ...] = PAPER_BLACKLIST
    max_instances_per_task: int = 5
    # An instance answer that ends on its own after one instance is asked again, sampled, once
    # (completions online: for_endpoint); jobs.method.stages.instances.
    instance_followup: bool = True
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

    def derived_seed(self, *parts: object) -> int:
        """A 31-bit seed for one purpose (a prompt, a request): stable across runs, processes and Pythons."""
        digest = hashlib.sha256(":".join(map(str, (self.seed, *parts))).encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def rng(self, *parts: object) -> random.Random:
        return random.Random(self.derived_seed(*parts))

    def for_endpoint(self, mode: str, api: str) -> Recipe:
        """The recipe as a run on an endpoint of this mode and API kind carries it out, so that what is
        recorded is what runs: a batch-mode run's stage 1 goes in rounds (its batches; BATCH_ROUND
        prompts unless the recipe names a size), and batch and chat runs ask once per instruction for
        instances (a second answer would need a second batch round; chat replies are not continued)."""
        out = self
        if mode == "batch" and self.round_size is None:
            out = replace(out, round_size=BATCH_ROUND)
        if mode == "batch" or api == "chat":
            out = replace(out, instance_followup=False)
        return out

    @property
    def request_budget(self) -> int:
        return self.max_requests if self.max_requests is not None else 20 + 10 * self.num_instructions

    def problems(self) -> list[tuple[str, str]]:
        """What keeps this recipe from running, as (field, message)."""
        out = []
        if self.num_instructions < 1:
            out.append(("num_instructions", "num_instructions must be at least 1"))
        if self.window < 1:
            out.append(("window", "window must be at least 1"))
        if self.round_size is not None and self.round_size < 1:
            out.append(("round_size", "round_size must be at least 1"))
        if not 0 <= self.prompt_machine_instructions < self.prompt_instructions:
            out.append(
                (
                    "prompt_machine_instructions",
                    "prompt_machine_instructions must be below prompt_instructions",
                )
            )
        if not 0.0 <= self.similarity_threshold <= 1.0:
            out.append(("similarity_threshold", "similarity_threshold must be within [0, 1]"))
        if not 0 <= self.contamination_ngram <= MAX_NGRAM:
            out.append(("contamination_ngram", f"contamination_ngram must be within [0, {MAX_NGRAM}]"))
        if self.contamination_threshold is not None and not 0.0 <= self.contamination_threshold <= 1.0:
            out.append(("contamination_threshold", "contamination_threshold must be within [0, 1] or null"))
        if self.semantic_threshold is not None and not -1.0 <= self.semantic_threshold <= 1.0:
            out.append(("semantic_threshold", "semantic_threshold must be within [-1, 1] or null"))
        if self.judge_threshold is not None and not 1 <= self.judge_threshold <= 5:
            out.append(("judge_threshold", "judge_threshold must be within [1, 5] or null"))
        if unknown := set(self.export_formats) - set(EXPORT_FORMATS):
            out.append(("export_formats", f"unknown export formats: {sorted(unknown)}"))
        if self.classification_method not in CLASSIFICATION_METHODS:
            out.append(
                ("classification_method", f"classification_method must be one of {CLASSIFICATION_METHODS}")
            )
        if set(self.decoding) != set(STAGES):
            out.append(("decoding", f"decoding must give exactly the stages {STAGES}"))
        return out

    @classmethod
    def build(cls, given: Mapping[str, Any]) -> Recipe:
        """The one way a recipe is made from what a caller gave (the API's body, a preview, the CLI's
        flags, a run.json's config): the given fields over the defaults, per-stage decoding overrides
        over the paper's, duplicate export formats once; checked. Raises RecipeError."""
        if unknown := set(given) - {f.name for f in fields(cls)}:
            raise RecipeError([(name, f"unknown recipe field {name}") for name in sorted(unknown)])
        kwargs = dict(given)
        for name in ("keyword_blacklist", "export_formats"):
            if name in kwargs:
                kwargs[name] = tuple(dict.fromkeys(kwargs[name]))
        base = paper_decoding(kwargs.get("max_instances_per_task", 5))
        overrides = kwargs.get("decoding") or {}
        if set(overrides) - set(base):
            raise RecipeError([("decoding", f"decoding must give exactly the stages {STAGES}")])
        try:
            kwargs["decoding"] = {
                stage: replace(decoding, **{k: tuple(v) if k == "stop" else v for k, v in over.items()})
                for stage, decoding in base.items()
                for over in [overrides.get(stage, {})]
            }
            recipe = cls(**kwargs)
        except TypeError as e:  # a decoding parameter that does not exist
            raise RecipeError([("decoding", str(e))]) from e
        if problems := recipe.problems():
            raise RecipeError(problems)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every field, JSON-ready; what a job's record and a preview's hold."""
        out = asdict(self)
        out["keyword_blacklist"] = list(self.keyword_blacklist)
        out["export_formats"] = list(self.export_formats)
        out["decoding"] = {k: {**asdict(v), "stop": list(v.stop)} for k, v in self.decoding.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A canonical dict (to_dict's) back as a recipe: it was checked when it was built (fields it
        predates: BEFORE_FIELDS)."""
        return cls(
            **{
                **BEFORE_FIELDS,
                **data,
                "keyword_blacklist": tuple(data["keyword_blacklist"]),
                "export_formats": tuple(data["export_formats"]),
                "decoding": {
                    stage: Decoding(**{**d, "stop": tuple(d["stop"])})
                    for stage, d in data["decoding"].items()
                },
            }
        )

    def record(self, execution: Execution) -> dict[str, Any]:
        """run.json's `config`: the recipe with the execution settings in the places they have always
        had there (datasets stay byte-stable across versions; so do the optional fields left unset)."""
        optional = ("round_size", "judge_threshold", "semantic_threshold")
        recipe = [(k, v) for k, v in self.to_dict().items() if k not in optional or v is not None]
        return {
            **dict(recipe[:2]),
            "concurrency": execution.concurrency,
            **dict(recipe[2:]),
            "checkpoint_every": execution.checkpoint_every,
        }
