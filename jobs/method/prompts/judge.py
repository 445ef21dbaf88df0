"""The LLM judge's rubric, its prompt (a text layout a base model continues, or chat messages with a
JSON schema) and reading its verdict back: a score from 1 to 5 and a one-sentence rationale.

The rubric is the one the report and the docs state. The completions layout shows three judged
examples written for this project (no seed task is among them, so no dataset's labels leak in); the
rationale comes before the score, so that the score follows from what the model wrote.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jobs.method.prompts.layouts import one_line
from jobs.method.recipe import Decoding

STAGE = "judge"  # its requests' stage in the usage and the batch ids
SCORES = (1, 2, 3, 4, 5)
RUBRIC = (
    "Rate the response from 1 to 5 for how well it follows the instruction and how correct it is:\n"
    "5: follows the instruction fully and is correct\n"
    "4: follows the instruction and is correct, with small flaws\n"
    "3: follows it only in part, or is partly wrong\n"
    "2: mostly off the task, or mostly wrong\n"
    "1: ignores the instruction, or is wrong or nonsense"
)
EXAMPLES = (
    (
        "Convert the distance from miles to kilometers.",
        "26.2 miles",
        "42.2 kilometers",
        "One mile is about 1.609 km, so 26.2 miles is about 42.2 km: correct and on task.",
        5,
    ),
    (
        "Give three synonyms of the word.",
        "happy",
        "joyful, sad, cheerful",
        "Two of the words are synonyms but sad is an antonym, so it is partly wrong.",
        3,
    ),
    (
        "Summarize the paragraph in one sentence.",
        "The city council voted on Monday to extend the library's opening hours to 9 pm on weekdays, "
        "after a survey found that most visitors wanted to come after work.",
        "Libraries are buildings that hold books.",
        "The response does not summarize the paragraph; it is off the task.",
        1,
    ),
)
# Greedy, short: a sentence and a digit (chat JSON needs a little more room).
DECODING = Decoding(96, 0.0, 1.0, stop=("\n\n", "Instruction:"))
CHAT_DECODING = Decoding(160, 0.0, 1.0)
REASONING_MAX_TOKENS = 4096
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string"},
        "score": {"type": "integer", "enum": list(SCORES)},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}
MAX_RATIONALE = 500  # characters kept in a decision record


@dataclass(frozen=True)
class Verdict:
    score: int | None  # None: no score could be read from the reply
    rationale: str


def _item(instruction: str, inst_input: str, output: str) -> str:
    shown = f"Instruction: {one_line(instruction)}\n"
    if inst_input.strip():
        shown += f"Input: {inst_input.strip()}\n"
    return shown + f"Response: {output.strip()}\n"


def completion_prompt(instruction: str, inst_input: str, output: str) -> str:
    demos = "".join(
        f"{_item(i, x, y)}Rationale: {why}\nScore: {score}\n\n" for i, x, y, why, score in EXAMPLES
    )
    return f"{RUBRIC}\n\n{demos}{_item(instruction, inst_input, output)}Rationale:"


def chat_messages(instruction: str, inst_input: str, output: str, structured: bool) -> list[dict[str, str]]:
    answer = (
        'Answer with JSON: {"rationale": "<one sentence>", "score": <1 to 5>}.'
        if structured
        else "Answer in two lines: `Rationale: <one sentence>`, then `Score: <1 to 5>`."
    )
    return [
        {"role": "system", "content": "You grade training data for instruction-following models strictly."},
        {"role": "user", "content": f"{RUBRIC}\n\n{_item(instruction, inst_input, output)}\n{answer}"},
    ]


_SCORE = re.compile(r"Score:\s*\**\s*([1-5])\b")
_RATIONALE = re.compile(r"^\s*(?:Rationale:)?\s*(.*?)\s*(?:\n|Score:|$)", re.S)


def read(reply: str, structured: bool = False, continued: bool = False) -> Verdict:
    """The verdict in a reply. `continued`: the reply continues the layout after its `Rationale:`."""
    if structured:
        try:
            data = json.loads(reply)
        except json.JSONDecodeError:
            data = {}
        data = data if isinstance(data, dict) else {}
        score, rationale = data.get("score"), data.get("rationale")
        valid = isinstance(score, int) and not isinstance(score, bool) and score in SCORES
        return Verdict(score if valid else None, _short(rationale if isinstance(rationale, str) else reply))
    found = _SCORE.search(reply)
    text = reply if continued else reply.split("Rationale:", 1)[-1]
    match = _RATIONALE.match(text)
    return Verdict(int(found.group(1)) if found else None, _short(match.group(1) if match else reply))


def _short(text: str) -> str:
    return one_line(text)[:MAX_RATIONALE]
