"""The method for instruction-following models behind /v1/chat/completions: the three stages' messages,
the JSON schemas of structured replies, and reading the replies back.

The demonstrations are the completions layouts' (jobs.method.prompts.layouts), shown inside a user
message with directions, in the spirit of Stanford Alpaca's generator: stage 1 asks for a numbered list of new
tasks with the requirements the paper's filters enforce; classification asks for Yes or No; instance
generation keeps the paper's order (output first for classification tasks, input first otherwise).
Every candidate still goes through the same filters as in completions mode.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jobs.method.prompts import parsing
from jobs.method.prompts.layouts import Prompts, one_line
from jobs.method.seed_tasks import SeedTask

Messages = list[dict[str, str]]

SYSTEM = "You write data for training instruction-following language models. Follow the directions exactly."
INSTRUCTION_REQUIREMENTS = (
    "Requirements: each task is one self-contained instruction of 4 to 150 words, in English, on one "
    "line, different in topic and wording from the examples and from each other; mix task types "
    "(open generation, classification, editing, question answering, brainstorming, rewriting). A "
    "task must not need images, graphs, pictures, files, maps, drawing, plotting or going somewhere, "
    'must not start with "Write a program", and starts with a letter.'
)
# Structured Outputs under `strict: true` (how OpenAI is asked, jobs.method.transport.client) takes a
# schema only if every object is closed (additionalProperties false) and requires every property it has.
CLASSIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["Yes", "No"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def _examples_schema(first: str, second: str) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {first: {"type": "string"}, second: {"type": "string"}},
        "required": [first, second],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"examples": {"type": "array", "items": item}},
        "required": ["examples"],
        "additionalProperties": False,
    }


# Output first for classification tasks (the label, then an input of that class), input first otherwise.
OUTPUT_FIRST_SCHEMA = _examples_schema("class_label", "input")
INPUT_FIRST_SCHEMA = _examples_schema("input", "output")


class ChatPrompts(Prompts):
    """Messages for each stage; `structured`: ask for JSON that follows the stage's schema."""

    def __init__(
        self, seed_tasks: list[SeedTask], seed: int, demo_chars: int, structured: bool, max_instances: int
    ):
        super().__init__(seed_tasks, seed, demo_chars)
        self.structured = structured
        self.max_instances = max_instances

    @staticmethod
    def _messages(user: str) -> Messages:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def instructions(self, examples: list[str], classification_only: bool = False) -> Messages:  # type: ignore[override]
        kind = (
            "classification tasks (each naming its output labels where possible)"
            if classification_only
            else "tasks"
        )
        listed = "\n".join(f"{n}. {one_line(text).rstrip(':')}" for n, text in enumerate(examples, start=1))
        count = len(examples)
        return self._messages(
            f"Here are examples of {kind}:\n{listed}\n\n"
            f"Write {count} new {kind}. {INSTRUCTION_REQUIREMENTS}\n"
            f"Answer with a numbered list from 1. to {count}., one task per item, and nothing else."
        )

    def classification(self, instruction: str) -> Messages:  # type: ignore[override]
        answer = (
            'Answer with JSON: {"answer": "Yes"} or {"answer": "No"}.'
            if self.structured
            else "Answer Yes or No."
        )
        return self._messages(
            f"{self.classification_prefix}Task: {one_line(instruction)}\nIs it classification? {answer}"
        )

    def instances(self, instruction: str, is_classification: bool) -> Messages:  # type: ignore[override]
        prefix = self.output_first_prefix if is_classification else self.input_first_prefix
        if is_classification:
            direction = (
                "Give this task's possible class labels, each followed by an input that belongs to that label"
            )
            layout = (
                'as JSON: {"examples": [{"class_label": "...", "input": "..."}, ...]}'
                if self.structured
                else "in the layout above: `Class label: <label>`, then the input on the next lines"
            )
        else:
            direction = (
                f"Write up to {self.max_instances} examples of this task, each an input (empty when the "
                "task needs none) and its correct output"
            )
            layout = (
                'as JSON: {"examples": [{"input": "...", "output": "..."}, ...]}'
                if self.structured
                else "in the layout above: `Example 1`, `Input: ...`, `Output: ...`, and so on"
            )
        return self._messages(f"{prefix}Task: {instruction.strip()}\n\n{direction}, {layout}. Nothing else.")


_NUMBERED_ITEM = re.compile(r"^[ \t]*(?:\*\*)?\d{1,3}[.)](?:\*\*)?[ \t]+", re.M)


def instructions(reply: str) -> list[str]:
    """The items of a numbered list in a chat reply; text before the first item (a preamble) and after
    a blank line that follows the last one (a closing remark) is not a candidate."""
    pieces = _NUMBERED_ITEM.split(reply)[1:]
    if pieces:
        pieces[-1] = pieces[-1].split("\n\n", 1)[0]
    out = []
    for piece in pieces:
        text = re.sub(r"\s+", " ", piece.replace("**", "")).strip()
        if text:
            out.append(text[0].upper() + text[1:])
    return out


def classification(reply: str, structured: bool) -> parsing.ClassificationAnswer:
    if structured:
        answer = _json(reply).get("answer")
        return "yes" if answer == "Yes" else "no" if answer == "No" else "unparseable"
    return parsing.classification(reply)


def instances(reply: str, is_classification: bool, structured: bool) -> list[tuple[str, str]]:
    """(input, output) pairs, from JSON or from the completions layouts."""
    if not structured:
        return parsing.instances(reply, is_classification)
    examples = _json(reply).get("examples")
    if not isinstance(examples, list):
        return []
    first, second = ("class_label", "input") if is_classification else ("input", "output")
    pairs = []
    for item in examples:
        if isinstance(item, dict) and isinstance(item.get(first), str) and isinstance(item.get(second), str):
            label_or_input, rest = item[first].strip(), item[second].strip()
            pairs.append((rest, label_or_input) if is_classification else (label_or_input, rest))
    return pairs


def _json(reply: str) -> dict[str, Any]:
    """The reply's JSON object; anything else reads as an empty one (the LLM client retried bad JSON)."""
    try:
        value = json.loads(reply)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def schema(stage: str, is_classification: bool = False) -> dict[str, Any]:
    if stage == "classification":
        return CLASSIFICATION_SCHEMA
    return OUTPUT_FIRST_SCHEMA if is_classification else INPUT_FIRST_SCHEMA
