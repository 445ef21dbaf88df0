"""The quality report of a dataset: the paper's Table 1 statistics beside the paper's own numbers, the
data of its Figure 3 (ROUGE-L of each kept instruction against its most similar seed instruction) and
Figure 4 (length distributions), and the filter counts per rule.

`build` is pure arithmetic over the checkpoint; jobs.method.outputs.figures draws the PNGs (the worker
draws them at export; the API serves the stored report.json); the card shows it (card.section).
"""

from __future__ import annotations

from collections import Counter
from statistics import fmean
from typing import Any

from jobs.method.checkpoint import Checkpoint
from jobs.method.prompts import judge
from jobs.method.seed_tasks import SeedTask
from jobs.method.similarity import RougeLIndex

# Self-Instruct (Wang et al., 2022), Table 1: the GPT-3 run's 52K instructions.
PAPER_TABLE1: dict[str, float] = {
    "instructions": 52_445,
    "classification_instructions": 11_584,
    "non_classification_instructions": 40_861,
    "instances": 82_439,
    "instances_with_empty_input": 35_878,
    "avg_instruction_words": 15.9,
    "avg_non_empty_input_words": 12.7,
    "avg_output_words": 18.9,
}
PAPER_DERIVED = {"instances_per_instruction": round(82_439 / 52_445, 2)}  # 1.57
ROUGE_BINS = 20  # Figure 3's histogram, [0, 1] in steps of 0.05
FIGURES = {"rouge": "figure3_rouge_l.png", "lengths": "figure4_lengths.png"}


def _words(text: str) -> int:
    return len(text.split())


def _mean(values: list[int]) -> float | None:
    return round(fmean(values), 2) if values else None


def build(checkpoint: Checkpoint, seed_tasks: list[SeedTask], stats: dict[str, Any]) -> dict[str, Any]:
    """report.json: the machine-generated part of the dataset (the seed tasks are not counted)."""
    kept = checkpoint.instructions
    clf = {k["id"] for k in kept if checkpoint.classification.get(k["id"], {}).get("label") == "yes"}
    instances = [(k["id"], i) for k in kept for i in checkpoint.instances.get(k["id"], [])]
    inputs = [_words(i["input"]) for _, i in instances if i["input"].strip()]
    outputs = [_words(i["output"]) for _, i in instances]
    instruction_words = [_words(k["text"]) for k in kept]
    labels = [len({i["output"].strip() for i in checkpoint.instances.get(k, [])}) for k in sorted(clf)]
    table = {
        "instructions": len(kept),
        "classification_instructions": len(clf),
        "non_classification_instructions": len(kept) - len(clf),
        "instances": len(instances),
        "instances_with_empty_input": len(instances) - len(inputs),
        "avg_instruction_words": _mean(instruction_words),
        "avg_non_empty_input_words": _mean(inputs),
        "avg_output_words": _mean(outputs),
    }
    index = RougeLIndex()
    for task in seed_tasks:
        index.add(task.id, task.instruction)
    scores = [round(index.nearest(k["text"]).score, 4) for k in kept] if len(index) else []
    bins = [0] * ROUGE_BINS
    for score in scores:
        bins[min(int(score * ROUGE_BINS), ROUGE_BINS - 1)] += 1
    return {
        "table1": [
            {"statistic": name, "this_dataset": table[name], "paper": PAPER_TABLE1[name]}
            for name in PAPER_TABLE1
        ],
        "instances_per_instruction": {
            "this_dataset": round(len(instances) / len(kept), 2) if kept else None,
            "paper": PAPER_DERIVED["instances_per_instruction"],
        },
        "distinct_labels_per_classification_instruction": _mean(labels),
        "rouge_l_to_nearest_seed": {
            "bin_width": 1 / ROUGE_BINS,
            "counts": bins,
            "mean": round(fmean(scores), 4) if scores else None,
            "scores": scores,
        },
        "lengths": {
            "instruction_words": _histogram(instruction_words),
            "non_empty_input_words": _histogram(inputs),
            "output_words": _histogram(outputs),
        },
        "filters": stats.get("verdicts", {}),
        # auto's table: each classification method on the seed tasks outside the demonstrations
        "classification_selection": (checkpoint.calibration or {}).get("selection"),
        "judge_scores": judge_scores(stats.get("judge_scores")),
        "figures": FIGURES,
    }


def judge_scores(counts: dict[str, int] | None) -> dict[str, Any] | None:
    """The LLM judge's score distribution over the instances the filters kept (None: no judge)."""
    if counts is None:
        return None
    scores = [int(score) for score, n in counts.items() if score != "unscored" for _ in range(n)]
    return {
        "counts": {str(score): counts.get(str(score), 0) for score in judge.SCORES},
        "unscored": counts.get("unscored", 0),
        "mean": round(fmean(scores), 3) if scores else None,
        "rubric": judge.RUBRIC,
    }


def _histogram(values: list[int]) -> dict[str, int]:
    """Words -> count, ascending (string keys: JSON objects)."""
    return {str(k): v for k, v in sorted(Counter(values).items())}
