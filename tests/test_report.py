"""The quality report against a small dataset computed by hand, and the files it adds to a dataset."""

from __future__ import annotations

import json

from jobs.method.checkpoint import Checkpoint
from jobs.method.outputs import exports, report
from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import Instance, SeedTask

SEEDS = [
    SeedTask("s1", "Sort the given list of numbers.", (Instance("3, 1, 2", "1, 2, 3"),)),
    SeedTask("s2", "Classify the sentiment of the sentence.", (Instance("I am happy.", "positive"),), True),
]
# three instructions: one a copy of a seed (ROUGE-L 1.0), one sharing nothing with the seeds (0.0),
# one classification task whose 5 words share a 4-word subsequence with s2's 6: F = 2*4/(5+6) = 0.7273
CHECKPOINT = Checkpoint(
    stage="export",
    instructions=[
        {"id": "a", "text": "Sort the given list of numbers."},
        {"id": "b", "text": "Write a haiku."},
        {"id": "c", "text": "Classify the sentiment of tweets."},
    ],
    classification={"a": {"label": "no"}, "b": {"label": "no"}, "c": {"label": "yes"}},
    instances={
        "a": [{"input": "5, 4", "output": "4, 5"}, {"input": "9 8 7 1", "output": "1 7 8 9"}],
        "b": [{"input": "", "output": "Old pond, a frog jumps in"}],
        "c": [
            {"input": "Great day!", "output": "positive"},
            {"input": "Awful.", "output": "negative"},
            {"input": "So good", "output": "positive"},
        ],
    },
)
STATS = {
    "verdicts": {"instruction": {"kept": 3, "too_similar": 2}, "instance": {"kept": 6, "empty_output": 1}}
}


def test_table1_and_the_figures_data_match_a_hand_computed_dataset() -> None:
    got = report.build(CHECKPOINT, SEEDS, STATS)
    table = {row["statistic"]: (row["this_dataset"], row["paper"]) for row in got["table1"]}
    assert table == {
        "instructions": (3, 52_445),
        "classification_instructions": (1, 11_584),
        "non_classification_instructions": (2, 40_861),
        "instances": (6, 82_439),
        "instances_with_empty_input": (1, 35_878),
        # words: instructions 6, 3, 5; inputs 2, 4, 2, 1, 2; outputs 2, 4, 6, 1, 1, 1
        "avg_instruction_words": (4.67, 15.9),
        "avg_non_empty_input_words": (2.2, 12.7),
        "avg_output_words": (2.5, 18.9),
    }
    assert got["instances_per_instruction"] == {"this_dataset": 2.0, "paper": 1.57}
    assert got["distinct_labels_per_classification_instruction"] == 2.0
    rouge = got["rouge_l_to_nearest_seed"]
    assert rouge["scores"] == [1.0, 0.0, round(8 / 11, 4)]
    assert rouge["counts"][0] == 1 and rouge["counts"][14] == 1 and rouge["counts"][19] == 1
    assert sum(rouge["counts"]) == 3
    assert got["lengths"]["instruction_words"] == {"3": 1, "5": 1, "6": 1}
    assert got["lengths"]["non_empty_input_words"] == {"1": 1, "2": 3, "4": 1}
    assert got["lengths"]["output_words"] == {"1": 3, "2": 1, "4": 1, "6": 1}
    assert got["filters"] == STATS["verdicts"]


def test_the_dataset_carries_the_report_its_figures_and_a_card_linking_them(tmp_path) -> None:
    config = Recipe(num_instructions=3)
    stats = {
        **STATS,
        "instructions_kept": 3,
        "instances_kept": 6,
        "stop_reason": "target_reached",
        "cost": None,
    }
    stats["tokens"] = {"prompt": 0, "completion": 0}
    run_record = {
        "run_id": "r",
        "engine_version": "0",
        "seed_set": {"sha256": "0" * 64, "tasks": 2},
        "endpoint": {"model": "m", "api": "completions"},
        "random_seed": 1,
        "config": config.to_dict(),
    }
    exports.write(tmp_path, CHECKPOINT, SEEDS, config, [], stats, run_record)
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored == json.loads(json.dumps(report.build(CHECKPOINT, SEEDS, stats)))
    for name in report.FIGURES.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (tmp_path / "README.md").read_text()
    assert f"]({report.FIGURES['rouge']})" in card and f"]({report.FIGURES['lengths']})" in card
    assert "| instructions | 3 | 52445 |" in card
