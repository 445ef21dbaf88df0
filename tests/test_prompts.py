"""Instance-generation demonstrations, the classification demonstrations' balance, and the
case-insensitive "Write a program" filter."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

from jobs.method.prompts import parsing
from jobs.method.prompts.layouts import DEMONSTRATIONS_FILE, Prompts
from jobs.method.seed_tasks import Instance, load_file
from jobs.method.stages.filters import write_a_program

SEEDS = load_file("data/seed_tasks.jsonl")


def _tasks(prefix: str) -> list[str]:
    return prefix.split("\n\nTask: ")[1:]


def test_the_shipped_demonstrations_show_several_labels_per_classification_task() -> None:
    demos = load_file(DEMONSTRATIONS_FILE)
    clf = [t for t in demos if t.is_classification]
    assert len(clf) == 14 and len(demos) == 25
    for task in clf:
        assert 2 <= len({i.output for i in task.instances}) <= 4, task.id
    assert sum(len(t.instances) > 1 for t in demos if not t.is_classification) >= 4


def test_seed_sets_with_one_instance_per_task_take_the_reference_examples() -> None:
    prompts = Prompts(SEEDS, 42, 4000)
    assert prompts.demonstrations == "reference"
    blocks = _tasks(prompts.output_first_prefix)
    assert len(blocks) >= 4
    for block in blocks:
        labels = [label for _, label in parsing.classification_instances(block)]
        assert len(set(labels)) >= 2, block
    # the non-classification prefix shows numbered examples, as the reference's does
    assert "Example 2\nInput: " in prompts.input_first_prefix
    demo_texts = {t.instruction for t in load_file(DEMONSTRATIONS_FILE)}
    assert {b.split("\n", 1)[0] for b in blocks} <= demo_texts


def test_a_seed_set_with_several_instances_is_its_own_demonstration_set() -> None:
    rich = [
        replace(t, instances=(*t.instances, Instance("another input", "another label")))
        if t.is_classification
        else t
        for t in SEEDS
    ]
    prompts = Prompts(rich, 42, 4000)
    assert prompts.demonstrations == "seed_set"
    blocks = _tasks(prompts.output_first_prefix)
    assert blocks and all("Class label: another label" in b for b in blocks)


def test_classification_demonstrations_follow_the_reference_balance() -> None:
    prefix = Prompts(SEEDS, 7, 100_000).classification_prefix
    assert (prefix.count("? Yes\n"), prefix.count("? No\n")) == (12, 19)
    answers = re.findall(r"\? (Yes|No)\n", prefix)
    alternating = all(a != b for a, b in itertools.pairwise(answers))
    assert not alternating and answers[:12] != ["Yes"] * 12  # a random order


def test_write_a_program_is_matched_whatever_the_case() -> None:
    assert write_a_program("Write A Program that sorts a list.") == ("write_a_program", {})
    assert write_a_program("write a program to add numbers") == ("write_a_program", {})
    assert write_a_program("Write an essay about programs.") is None
