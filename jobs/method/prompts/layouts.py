"""Prompt layouts for the three stages, in the paper's formats, with demonstrations from the seed set.

The demonstration block of each stage is fixed for a run, so every prompt of a stage shares one long
prefix: servers with a prompt cache (llama.cpp keeps the previous prompt's) only evaluate the tail.
"""

from __future__ import annotations

import random
import re
from functools import cache
from pathlib import Path

from jobs.method.seed_tasks import SeedTask, load_file

INSTRUCTIONS_HEADER = "Below is a numbered list of diverse, self-contained tasks:"
CLASSIFICATION_ONLY_HEADER = (
    "Below is a numbered list of classification tasks; where possible each names its output labels:"
)
CLASSIFICATION_HEADER = (
    "For each task below, decide whether it is a classification task: one whose answer is a label "
    "from a small, fixed set.\n\n"
)
OUTPUT_FIRST_HEADER = (
    "Each classification task below is followed by some of its class labels, each with an input "
    "that belongs to that label.\n\n"
)
INPUT_FIRST_HEADER = (
    "Each task below is followed by worked examples: an input, when the task needs one, then the output.\n\n"
)
MAX_DEMO_CHARS = 600  # skip very long seed instances as demonstrations
# Task texts with no content, scored in place of an instruction to measure the model's bias between
# the labels (contextual calibration, Zhao et al. 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")
MAX_CLASSIFICATION_DEMOS = 31  # as many as the reference's few-shot block
CLASSIFICATION_YES, CLASSIFICATION_NO = 12, 19  # the reference's mix (clf_task_template.py)
# The reference's hand-written instance-generation examples (instance_gen_template.py) in the seed
# format: 2-4 labels per classification task, several examples for most others.
DEMONSTRATIONS_FILE = Path(__file__).with_name("instance_demonstrations.jsonl")


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def instruction_prompt(instructions: list[str], classification_only: bool = False) -> str:
    """The stage-1 layout: header, `1. ` .. `8. `, then `9.` for the model to continue."""
    lines = [CLASSIFICATION_ONLY_HEADER if classification_only else INSTRUCTIONS_HEADER]
    for number, instruction in enumerate(instructions, start=1):
        lines.append(f"{number}. {one_line(instruction).rstrip(':')}")
    lines.append(f"{len(instructions) + 1}.")
    return "\n".join(lines)


def _interleave(rng: random.Random, yes: list[SeedTask], no: list[SeedTask]) -> list[SeedTask]:
    """The reference's balance, 12 classification and 19 other tasks, in a random order."""
    out = rng.sample(yes, min(CLASSIFICATION_YES, len(yes))) + rng.sample(no, min(CLASSIFICATION_NO, len(no)))
    rng.shuffle(out)
    return out


@cache
def reference_demonstrations() -> tuple[SeedTask, ...]:
    return tuple(load_file(DEMONSTRATIONS_FILE))


def instance_demonstrations(seed_tasks: list[SeedTask]) -> tuple[str, list[SeedTask]]:
    """Where the instance-generation demonstrations come from, and the tasks.

    A seed set whose tasks carry one instance each (the paper's) cannot show several labels or
    examples per task, so the reference's examples stand in for it; a richer seed set is used as it is."""
    if any(len(t.instances) > 1 for t in seed_tasks):
        return "seed_set", seed_tasks
    return "reference", list(reference_demonstrations())


class Prompts:
    """Builds every prompt of a run; the demonstrations are chosen once from the seed set."""

    def __init__(self, seed_tasks: list[SeedTask], seed: int, demo_chars: int):
        rng = random.Random(f"{seed}:demonstrations")
        yes = [t for t in seed_tasks if t.is_classification]
        no = [t for t in seed_tasks if not t.is_classification]
        self.classification_prefix = self._classification_block(_interleave(rng, yes, no), demo_chars)
        self.demonstrations, demos = instance_demonstrations(seed_tasks)
        demo_yes = [t for t in demos if t.is_classification] or yes
        demo_no = [t for t in demos if not t.is_classification]
        self.output_first_prefix = self._instances_block(rng, demo_yes, demo_chars, OUTPUT_FIRST_HEADER, True)
        self.input_first_prefix = self._instances_block(rng, demo_no, demo_chars, INPUT_FIRST_HEADER, False)

    @staticmethod
    def _classification_block(tasks: list[SeedTask], demo_chars: int) -> str:
        block = CLASSIFICATION_HEADER
        for count, task in enumerate(tasks):
            answer = "Yes" if task.is_classification else "No"
            demo = f"Task: {one_line(task.instruction)}\nIs it classification? {answer}\n\n"
            if count >= MAX_CLASSIFICATION_DEMOS or len(block) + len(demo) > demo_chars:
                break
            block += demo
        return block

    @staticmethod
    def _instances_block(
        rng: random.Random, tasks: list[SeedTask], demo_chars: int, header: str, output_first: bool
    ) -> str:
        tasks = tasks[:]
        rng.shuffle(tasks)
        block = header
        for task in tasks:
            instances = [i for i in task.instances if len(i.input) + len(i.output) <= MAX_DEMO_CHARS]
            if not instances:
                continue
            demo = f"Task: {task.instruction.strip()}\n"
            if output_first:
                for inst in instances:
                    demo += f"Class label: {inst.output.strip()}\n"
                    demo += f"{inst.input.strip()}\n" if inst.input.strip() else ""
            elif all(not i.input.strip() for i in instances):
                demo += f"Output: {instances[0].output.strip()}\n"
            else:
                for number, inst in enumerate(instances, start=1):
                    demo += f"Example {number}\nInput: {inst.input.strip()}\nOutput: {inst.output.strip()}\n"
            demo += "\n"
            if len(block) + len(demo) > demo_chars:
                continue
            block += demo
        return block

    def instructions(self, examples: list[str], classification_only: bool = False) -> str:
        return instruction_prompt(examples, classification_only)

    def classification(self, instruction: str) -> str:
        return f"{self.classification_prefix}Task: {one_line(instruction)}\nIs it classification?"

    def instances(self, instruction: str, is_classification: bool) -> str:
        prefix = self.output_first_prefix if is_classification else self.input_first_prefix
        return f"{prefix}Task: {instruction.strip()}\n"
