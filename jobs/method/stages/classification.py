"""Stage 2, classification identification: the few-shot yes/no prompt for each kept instruction.

The paper reads the greedy answer's text. Where the endpoint gives log-probabilities, the answer can
instead compare the two labels' probabilities, corrected for the model's bias measured on content-free
inputs (contextual calibration, Zhao et al. 2021, "Calibrate Before Use"), and optionally thresholded
where the calibrated margin best separates the seed tasks that are not among the demonstrations.
Another needs no log-probabilities and no model: a vote of the instruction's nearest seed tasks by
TF-IDF similarity of their wording, which held-out seed tasks show to generalise much better than any
reading of the small embedded model's answer (benchmarks/classification.py). The default, `auto`,
decides for the endpoint the run is on: it asks the model about the seed tasks outside the
demonstrations, scores every method on them, and takes the best (`select`).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jobs.method.prompts import chat, parsing
from jobs.method.prompts.layouts import CONTENT_FREE, one_line
from jobs.method.run import Run
from jobs.method.seed_tasks import SeedTask
from jobs.method.transport import LLM, Completion, EndpointError, ordered

STAGE = "classification"
TOP_LOGPROBS = 5  # OpenAI's completions allow at most 5
# auto's requests are counted apart: a cost a run pays once, not one per instruction
SELECTION_STAGE = "classification_selection"
# the methods auto weighs, cheapest to run first; it takes the cheapest whose balanced accuracy is within
# MARGIN of the best, about one standard error of the difference of two methods' on 40 tasks (on the
# embedded model a lower one let chance pick a model method over knn: benchmarks/classification.py)
CHOICES = ("knn", "text", "logprobs", "calibrated", "fitted")
MARGIN = 0.1
FIT_TASKS = 40  # seed tasks scored to fit the threshold: every classification one, then others
NEIGHBOURS = 20  # seed tasks that vote in the knn method
EVIDENCE_NEIGHBOURS = 3  # of them, recorded with each answer
Pair = tuple[float, float]  # log P(Yes), log P(No)
Vote = tuple[float, list[dict[str, Any]]]  # the knn score, and the nearest seed tasks


def label_logprobs(top: dict[str, float]) -> tuple[float, float]:
    """log P(Yes), log P(No) of the first token: the sum over the spellings among the alternatives
    (" Yes", "Yes", " YES", ...). A label missing from them gets the least listed log-probability, an
    upper bound of its own."""
    floor = min(top.values())
    out = []
    for label in ("yes", "no"):
        found = [lp for token, lp in top.items() if token.strip().rstrip(".").lower() == label]
        out.append(math.log(sum(math.exp(lp) for lp in found)) if found else floor)
    return out[0], out[1]


def content_free_shift(pairs: Sequence[tuple[float, float]]) -> float:
    """Contextual calibration for two labels: the log-ratio of the Yes/No probabilities, each pair
    normalised to sum to one, averaged over the content-free inputs. Subtracting it from a margin
    divides that bias out."""
    p_yes = sum(1 / (1 + math.exp(no - yes)) for yes, no in pairs) / len(pairs)
    return math.log(p_yes) - math.log(1 - p_yes)


def balanced_accuracy(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    """Mean of the recall on each class present (0.5 for a constant answer)."""
    recalls = []
    for cls in (True, False):
        hits = [p == t for t, p in zip(truth, predicted, strict=True) if t == cls]
        if hits:
            recalls.append(sum(hits) / len(hits))
    return sum(recalls) / len(recalls) if recalls else 0.0


def fit_threshold(margins: Sequence[float], truth: Sequence[bool]) -> float:
    """The threshold (answer Yes above it) with the best balanced accuracy on these labelled margins,
    midway between neighbours; ties go to the one nearest zero. One sweep up the sorted margins, each
    passed margin turning its answer to No."""
    points = sorted(set(margins))
    candidates = [points[0] - 1.0, *((a + b) / 2 for a, b in itertools.pairwise(points)), points[-1] + 1.0]
    at: dict[float, list[int]] = {p: [0, 0] for p in points}  # margin -> [Yes tasks, No tasks] there
    for m, t in zip(margins, truth, strict=True):
        at[m][0 if t else 1] += 1
    pos = sum(1 for t in truth if t)
    neg = len(truth) - pos
    tp, tn = pos, 0  # below every margin: all Yes
    best: tuple[tuple[float, float], float] | None = None
    for k, t in enumerate(candidates):
        recalls = ([tp / pos] if pos else []) + ([tn / neg] if neg else [])
        key = (sum(recalls) / len(recalls) if recalls else 0.0, -abs(t))
        if best is None or key > best[0]:
            best = (key, t)
        if k < len(points):
            tp -= at[points[k]][0]
            tn += at[points[k]][1]
    assert best is not None
    return best[1]


def held_out_thresholds(margins: Sequence[float], truth: Sequence[bool], which: Sequence[int]) -> list[float]:
    """For each index in `which`, the threshold fitted on every other margin: that one's answer is then
    made without its own label."""
    return [
        fit_threshold(
            [m for j, m in enumerate(margins) if j != i], [t for j, t in enumerate(truth) if j != i]
        )
        for i in which
    ]


def confusion(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, Any]:
    """Balanced accuracy with the counts it comes from."""
    pairs = list(zip(truth, predicted, strict=True))
    return {
        "balanced_accuracy": round(balanced_accuracy(truth, predicted), 4),
        "tp": sum(t and p for t, p in pairs),
        "fn": sum(t and not p for t, p in pairs),
        "tn": sum(not t and not p for t, p in pairs),
        "fp": sum(not t and p for t, p in pairs),
    }


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


class SeedNeighbours:
    """The knn method: TF-IDF vectors (sublinear term frequency) of the seed instructions. A text's
    score is the similarity-weighted vote of its NEIGHBOURS nearest seed tasks, each vote divided by
    its class's size so that the rarer class (classification, 15% of the paper's seeds) is not
    outvoted by its frequency alone; Yes above a threshold fitted on the seed tasks themselves, each
    scored against the others (leave-one-out)."""

    def __init__(self, tasks: Sequence[SeedTask], k: int = NEIGHBOURS):
        docs = [Counter(_words(t.instruction)) for t in tasks]
        df = Counter(word for doc in docs for word in doc)
        self.idf = {word: math.log((1 + len(docs)) / (1 + n)) + 1 for word, n in df.items()}
        self.vectors = [self._vector(doc) for doc in docs]
        # word -> (seed, weight): a text is compared with the seeds that share a word with it only
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for i, vec in enumerate(self.vectors):
            for word, x in vec.items():
                self.postings.setdefault(word, []).append((i, x))
        self.tasks = list(tasks)
        self.k = k
        yes = sum(t.is_classification for t in tasks)
        self.weight = {True: 1 / max(yes, 1), False: -1 / max(len(tasks) - yes, 1)}

    def _vector(self, counts: Counter[str]) -> dict[str, float]:
        vec = {w: (1 + math.log(n)) * self.idf[w] for w, n in counts.items() if w in self.idf}
        norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
        return {w: x / norm for w, x in vec.items()}

    def _nearest(self, vec: dict[str, float], skip: int | None = None) -> list[tuple[float, int]]:
        dots = [0.0 if vec else 0] * len(self.vectors)  # as sum() of no words gave: an int 0
        for w, x in vec.items():
            for i, y in self.postings.get(w, ()):
                dots[i] += x * y
        sims = [(dot, i) for i, dot in enumerate(dots) if i != skip]
        return sorted(sims, key=lambda s: (-s[0], s[1]))[: self.k]

    def _score(self, nearest: list[tuple[float, int]]) -> float:
        return sum(sim * self.weight[self.tasks[i].is_classification] for sim, i in nearest)

    def score(self, text: str) -> tuple[float, list[dict[str, Any]]]:
        """The vote, and the nearest seed tasks as evidence."""
        nearest = self._nearest(self._vector(Counter(_words(text))))
        evidence = [
            {
                "id": self.tasks[i].id,
                "similarity": round(sim, 4),
                "is_classification": self.tasks[i].is_classification,
            }
            for sim, i in nearest[:EVIDENCE_NEIGHBOURS]
        ]
        return self._score(nearest), evidence

    def left_out_scores(self) -> list[float]:
        """Each seed task's vote by the others."""
        return [self._score(self._nearest(vec, skip=i)) for i, vec in enumerate(self.vectors)]

    def fit_threshold(self) -> float:
        return fit_threshold(self.left_out_scores(), [t.is_classification for t in self.tasks])


def _request(
    run: Run, llm: LLM, text: str, key: str, logprobs: bool, stage: str = STAGE
) -> Awaitable[list[Completion]]:
    cfg = run.recipe
    decoding = cfg.decoding[STAGE]
    schema = chat.schema(STAGE) if llm.structured else None
    if schema:  # room for {"answer": "Yes"}
        decoding = replace(decoding, max_tokens=max(decoding.max_tokens, 16))
    extra: dict[str, Any] = {}
    if logprobs:
        extra = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if llm.chat else {"logprobs": TOP_LOGPROBS}
    prompt = run.prompts.classification(text)
    return llm.complete(prompt, decoding, cfg.derived_seed(STAGE, key), stage, schema, n=1, **extra)


def _parse(llm: LLM, raw: str) -> parsing.ClassificationAnswer:
    return chat.classification(raw, True) if llm.structured else parsing.classification(raw)


async def calibration(run: Run, llm: LLM, method: str) -> dict[str, Any]:
    """What every answer of this run shares: the method used, and its shift and threshold (or why it
    fell back to another method). Kept in the checkpoint: a resumed run takes it from there (or,
    recorded before it was kept there, from an answer already made)."""
    if run.checkpoint.calibration is not None:
        return run.checkpoint.calibration
    for answer in run.checkpoint.classification.values():
        if "method" in answer:
            return {k: answer[k] for k in ("method", "shift", "threshold", "fallback") if k in answer}
    if method == "auto" and not run.recipe.auto_selects:  # recorded when auto meant knn
        method = "knn"
    calibrate = _auto if method == "auto" else METHODS[method].calibrate
    run.checkpoint.calibration = await calibrate(run, llm, method)
    run.commit()  # what it cost (auto's requests) is not paid twice after a crash
    return run.checkpoint.calibration


async def _knn(run: Run, llm: LLM, method: str) -> dict[str, Any]:
    sizes = Counter(t.is_classification for t in run.seed_tasks)
    if min(sizes[True], sizes[False]) < 2:
        return {"method": "text", "fallback": "knn needs at least 2 seed tasks of each class"}
    return {"method": "knn", "threshold": SeedNeighbours(run.seed_tasks).fit_threshold()}


async def _by_logprobs(run: Run, llm: LLM, method: str) -> dict[str, Any]:
    """The logprobs, calibrated and fitted methods: the content-free inputs' label log-probabilities (and
    the fit tasks' for fitted), or why the run falls back."""
    if llm.reasoning:
        return {"method": "text", "fallback": "reasoning models give no log-probabilities"}
    if llm.structured:
        return {"method": "text", "fallback": "structured chat replies carry no label log-probabilities"}
    tasks = fit_tasks(run) if method == "fitted" else []
    fitted = len({t.is_classification for t in tasks}) == 2
    free_texts = [(text, f"content-free:{i}") for i, text in enumerate(CONTENT_FREE)]
    fit_texts = [(t.instruction, f"fit:{i}") for i, t in enumerate(tasks)] if fitted else []
    try:  # the fit tasks are scored only once the content-free inputs gave log-probabilities
        scored, missing = await score_texts(run, llm, free_texts + fit_texts)
    except EndpointError as exc:  # e.g. llama.cpp's Python server without logits_all: HTTP 500
        return {"method": "text", "fallback": f"log-probabilities failed: {exc}"}
    free, pairs = scored[: len(free_texts)], scored[len(free_texts) :]
    if missing and len(free) < len(free_texts):
        return {"method": "text", "fallback": missing}
    if method == "logprobs":
        return {"method": method}
    shift = content_free_shift(free)
    if method == "calibrated":
        return {"method": method, "shift": shift}
    if not fitted:
        return {
            "method": "calibrated",
            "shift": shift,
            "fallback": "no threshold fitted: the seed tasks outside the demonstrations lack a class",
        }
    if missing:
        return {"method": "text", "fallback": missing}
    margins = [yes - no - shift for yes, no in pairs]
    return {
        "method": "fitted",
        "shift": shift,
        "threshold": fit_threshold(margins, [t.is_classification for t in tasks]),
    }


async def _text(run: Run, llm: LLM, method: str) -> dict[str, Any]:
    return {"method": "text"}


async def _auto(run: Run, llm: LLM, method: str) -> dict[str, Any]:
    """The method `select` finds best on the fit tasks, from the model's answers to them (and to the
    content-free inputs, where the endpoint gives log-probabilities), with the table it chose from under
    `selection`. The requests go as one round (in batch mode, one batch: a resumed run finds it)."""
    fit = fit_tasks(run)
    if len({t.is_classification for t in fit}) < 2:  # nothing to tell the methods apart by
        shared = await _knn(run, llm, "knn")
        skipped = "the seed tasks outside the demonstrations lack a class"
        return {**shared, "selection": {"chosen": shared["method"], "skipped": skipped}}
    why = None
    refused = llm.usage.dropped.get("logprobs") or llm.usage.dropped.get("top_logprobs")
    if llm.reasoning:
        why = "reasoning models give no log-probabilities"
    elif llm.structured:
        why = "structured chat replies carry no label log-probabilities"
    elif refused:  # refused by name, or (recorded below) failed: a resumed run asks without them
        why = f"the endpoint refused log-probabilities: {refused}"
    texts = [(t.instruction, f"fit:{i}") for i, t in enumerate(fit)]
    if why is None:
        texts = [(text, f"content-free:{i}") for i, text in enumerate(CONTENT_FREE)] + texts
    try:
        answers = await _answers(run, llm, texts, why is None)
    except EndpointError as exc:  # e.g. llama.cpp's Python server without logits_all: HTTP 500
        if why is not None:
            raise
        why = f"log-probabilities failed: {exc}"
        # kept with the run's usage (and committed): in batch mode the round below waits, and the run
        # that resumes must ask for it, not the round that failed
        llm.usage.dropped.setdefault("logprobs", why)
        run.commit()
        texts = texts[len(CONTENT_FREE) :]
        answers = await _answers(run, llm, texts, False)
    pairs = [label_logprobs(c.top_logprobs) if c.top_logprobs else None for c in answers]
    if why is None and None in pairs:
        missing = pairs.count(None)
        if refused := llm.usage.dropped.get("logprobs") or llm.usage.dropped.get("top_logprobs"):
            why = f"the endpoint refused log-probabilities: {refused}"
        else:
            why = "the endpoint gave no log-probabilities" + (
                f" for {missing} of {len(pairs)} requests" if missing < len(pairs) else ""
            )
    labels = [_parse(llm, c.text) == "yes" for c in answers[-len(fit) :]]
    if why is None:
        free, given = pairs[: len(CONTENT_FREE)], pairs[len(CONTENT_FREE) :]
        return select(run.seed_tasks, fit, labels, given, free)  # type: ignore[arg-type]
    return select(run.seed_tasks, fit, labels, None, None, why)


async def _answers(run: Run, llm: LLM, texts: list[tuple[str, str]], logprobs: bool) -> list[Completion]:
    """The classification prompt's answer for each (text, request key), in order: auto's requests."""
    answers: list[Completion] = []

    def build(i: int) -> Awaitable[list[Completion]] | None:
        return _request(run, llm, *texts[i], logprobs, SELECTION_STAGE) if i < len(texts) else None

    def handle(i: int, completions: list[Completion]) -> bool:
        answers.append(completions[0])
        return False

    await ordered(0, build, handle, llm.capacity(run.execution.concurrency), max(len(texts), 1))
    return answers


def select(
    seeds: Sequence[SeedTask],
    fit: Sequence[SeedTask],
    labels: Sequence[bool],
    pairs: Sequence[Pair] | None,
    free: Sequence[Pair] | None,
    why: str | None = None,
) -> dict[str, Any]:
    """auto's choice: every method's balanced accuracy on the fit tasks (seed tasks outside the
    demonstrations), each answer made without that task's own label: knn votes with the other seed tasks
    and thresholds where they are best separated, fitted thresholds on the other fit tasks. `labels`:
    the model's answer to each (Yes: True); `pairs` and `free`: the label log-probabilities of the fit
    tasks and the content-free inputs, None (with `why`) where the endpoint gave none. The cheapest
    method (CHOICES) within MARGIN of the best, with what every answer of it shares, and the table under
    `selection`."""
    truth = [t.is_classification for t in fit]
    predicted: dict[str, list[bool]] = {}
    unavailable: dict[str, str] = {}
    shared: dict[str, dict[str, Any]] = {"text": {"method": "text"}}
    sizes = Counter(t.is_classification for t in seeds)
    if min(sizes[True], sizes[False]) >= 2:
        knn = SeedNeighbours(seeds)
        scores, known = knn.left_out_scores(), [t.is_classification for t in seeds]
        where = {t.id: i for i, t in enumerate(seeds)}
        rows = [where[t.id] for t in fit]
        cuts = held_out_thresholds(scores, known, rows)
        predicted["knn"] = [scores[i] > cut for i, cut in zip(rows, cuts, strict=True)]
        shared["knn"] = {"method": "knn", "threshold": fit_threshold(scores, known)}
    else:
        unavailable["knn"] = "knn needs at least 2 seed tasks of each class"
    predicted["text"] = list(labels)
    if pairs is None or free is None:
        unavailable |= dict.fromkeys(("logprobs", "calibrated", "fitted"), why or "no log-probabilities")
    else:
        shift = content_free_shift(free)
        margins = [yes - no - shift for yes, no in pairs]
        cuts = held_out_thresholds(margins, truth, range(len(fit)))
        predicted["logprobs"] = [m + shift > 0 for m in margins]
        predicted["calibrated"] = [m > 0 for m in margins]
        predicted["fitted"] = [m > cut for m, cut in zip(margins, cuts, strict=True)]
        shared["logprobs"] = {"method": "logprobs"}
        shared["calibrated"] = {"method": "calibrated", "shift": shift}
        shared["fitted"] = {"method": "fitted", "shift": shift, "threshold": fit_threshold(margins, truth)}
    table = {m: confusion(truth, predicted[m]) for m in CHOICES if m in predicted}
    best = max(row["balanced_accuracy"] for row in table.values())
    # the cheapest within the noise of the best (rounded: 0.1 apart is within, whatever the floats)
    chosen = next(m for m in table if round(best - table[m]["balanced_accuracy"], 6) <= MARGIN)
    selection = {
        "chosen": chosen,
        "margin": MARGIN,
        "tasks": len(fit),
        "classification_tasks": sum(truth),
        "methods": table,
        **({"unavailable": unavailable} if unavailable else {}),
    }
    return {**shared[chosen], "selection": selection}


async def score_texts(
    run: Run, llm: LLM, texts: list[tuple[str, str]]
) -> tuple[list[tuple[float, float]], str | None]:
    """(log P(Yes), log P(No)) for each (text, request key) in the classification prompt, in order, up
    to the first answer without them, and then why there are none. As many requests go at once as the
    transport takes for one: online one at a time, so the shared prefix stays in the server's cache and
    the first answer without log-probabilities ends it; in a batch, all of them."""
    out: list[tuple[float, float]] = []
    missing: list[str] = []

    def build(i: int) -> Awaitable[list[Completion]] | None:
        return _request(run, llm, *texts[i], True) if i < len(texts) else None

    def handle(i: int, completions: list[Completion]) -> bool:
        top = completions[0].top_logprobs
        if top is None:
            refused = llm.usage.dropped.get("logprobs") or llm.usage.dropped.get("top_logprobs")
            missing.append(
                f"the endpoint refused log-probabilities: {refused}"
                if refused
                else "the endpoint gave no log-probabilities"
            )
            return True
        out.append(label_logprobs(top))
        return False

    await ordered(0, build, handle, llm.capacity(1), max(len(texts), 1))
    return out, missing[0] if missing else None


def fit_tasks(run: Run) -> list[SeedTask]:
    """Seed tasks absent from the demonstrations (so none is scored with itself among them): every
    classification one, then others in a fixed random order, FIT_TASKS at most."""
    shown = run.prompts.classification_prefix
    unseen = [t for t in run.seed_tasks if f"Task: {one_line(t.instruction)}\n" not in shown]
    return pick_fit_tasks(unseen, run.recipe.rng(STAGE, "fit"))


def pick_fit_tasks(unseen: Sequence[SeedTask], rng: random.Random) -> list[SeedTask]:
    yes = [t for t in unseen if t.is_classification]
    no = [t for t in unseen if not t.is_classification]
    rng.shuffle(no)
    return (yes[: FIT_TASKS // 2] + no)[:FIT_TASKS]


def _decide_text(answer: dict[str, Any], pair: Pair | None, vote: Vote | None) -> dict[str, Any]:
    return answer


def _decide_knn(answer: dict[str, Any], pair: Pair | None, vote: Vote | None) -> dict[str, Any]:
    if vote is None:
        return answer
    score, nearest = vote
    answer.update(score=round(score, 6), neighbours=nearest)
    answer["label"] = "yes" if score > answer["threshold"] else "no"
    return answer


def _decide_margin(answer: dict[str, Any], pair: Pair | None, vote: Vote | None) -> dict[str, Any]:
    if pair is None:
        return answer
    yes, no = pair
    margin = yes - no - answer.get("shift", 0.0)
    answer.update(logprob_yes=round(yes, 6), logprob_no=round(no, 6), margin=round(margin, 6))
    answer["label"] = "yes" if margin > answer.get("threshold", 0.0) else "no"
    return answer


@dataclass(frozen=True)
class Method:
    """How stage 2 decides: `calibrate` makes what every answer shares once (or falls back to another
    method, which it names), `decide` labels one answer, `asks` says whether it reads the model's answer
    at all (a method that does not sends no request), `logprobs` whether its requests ask for the
    labels' log-probabilities, and `voters`, when given, builds from the seed tasks what votes on each
    instruction."""

    calibrate: Callable[[Run, LLM, str], Awaitable[dict[str, Any]]]
    decide: Callable[[dict[str, Any], Pair | None, Vote | None], dict[str, Any]]
    asks: bool = True
    logprobs: bool = False
    voters: Callable[[Sequence[SeedTask]], SeedNeighbours] | None = None


METHODS: dict[str, Method] = {
    "text": Method(_text, _decide_text),
    "logprobs": Method(_by_logprobs, _decide_margin, logprobs=True),
    "calibrated": Method(_by_logprobs, _decide_margin, logprobs=True),
    "fitted": Method(_by_logprobs, _decide_margin, logprobs=True),
    # the seed tasks nearest in wording vote: the model is not asked (its answer would go unread)
    "knn": Method(_knn, _decide_knn, asks=False, voters=SeedNeighbours),
}


def decide(
    pair: Pair | None,
    shared: dict[str, Any],
    raw: str | None,
    text_label: str | None,
    vote: Vote | None = None,
) -> dict[str, Any]:
    """One answer: the label by the run's method, with the raw text, both log-probabilities and the
    calibrated margin (log P(Yes) - log P(No) - shift) where there are some, or the knn vote and the
    nearest seed tasks. A method that does not ask the model has no raw text (None), and says so
    (`asked`: false)."""
    answer: dict[str, Any] = {"label": text_label, "raw": raw, **shared}
    if not METHODS[shared["method"]].asks:
        answer["asked"] = False
    return METHODS[shared["method"]].decide(answer, pair, vote)


async def run_stage(run: Run, llm: LLM) -> None:
    cfg, cp = run.recipe, run.checkpoint
    todo = [kept for kept in cp.instructions if kept["id"] not in cp.classification]
    run.start_stage(len(cp.instructions))
    run.stage_done = len(cp.instructions) - len(todo)
    if not todo:
        return
    # what every answer carries: not auto's table, which run.json and the report hold once
    shared = {
        k: v for k, v in (await calibration(run, llm, cfg.classification_method)).items() if k != "selection"
    }
    chosen = METHODS[shared["method"]]
    neighbours = chosen.voters(run.seed_tasks) if chosen.voters else None

    def record(i: int, completion: Completion | None) -> None:
        text = todo[i]["text"]
        vote = neighbours.score(text) if neighbours else None
        if completion is None:
            answer = decide(None, shared, None, None, vote)
        else:
            top = completion.top_logprobs
            pair = label_logprobs(top) if top else None
            answer = decide(pair, shared, completion.text, _parse(llm, completion.text), vote)
            if chosen.logprobs and pair is None:  # this one answer came without them: its text decides
                answer.update(
                    method="text", fallback="the endpoint gave no log-probabilities for this answer"
                )
        cp.classification[todo[i]["id"]] = answer
        run.count("classification", answer["label"])
        run.handled(free=not chosen.asks)

    if not chosen.asks:  # nothing to send: the method decides from the instruction alone
        for i in range(len(todo)):
            record(i, None)
        return

    def build(i: int) -> Awaitable[list[Completion]] | None:
        if i >= len(todo):
            return None
        return _request(run, llm, todo[i]["text"], todo[i]["id"], chosen.logprobs)

    def handle(i: int, completions: list[Completion]) -> bool:
        record(i, completions[0])
        return False

    concurrency = llm.capacity(run.execution.concurrency)
    await ordered(0, build, handle, concurrency, lag=4 * max(concurrency, cfg.window))


def is_classification(run: Run, instruction_id: str) -> bool:
    """An unparseable answer counts as not classification, as in the reference."""
    return run.checkpoint.classification[instruction_id]["label"] == "yes"
