"""Turn model text into candidates, as the reference code does (with its documented deviations)."""

from __future__ import annotations

import re
from typing import Literal

_NUMBERED = re.compile(r"\n\d+\s?\. ")
_SPACES = re.compile(r"\s+")
_EXAMPLE = re.compile(r"Example\s?\d*\.?")
_OUTPUT = re.compile(r"Output\s*\d*\s*:")
_INPUT = re.compile(r"Input\s*\d*\s*:")
_LEADING_INPUT = re.compile(r"^Input\s*\d*\s*:")

ClassificationAnswer = Literal["yes", "no", "unparseable"]


def instructions(text: str) -> list[str]:
    """Split a continued numbered list into instructions.

    Deviation from the reference: it applies str.capitalize(), which lower-cases everything after the
    first character ("NASA" -> "Nasa"); we only upper-case the first character.
    """
    out = []
    for piece in _NUMBERED.split(text):
        piece = _SPACES.sub(" ", piece).strip()
        if piece:
            out.append(piece[0].upper() + piece[1:])
    return out


def classification(text: str) -> ClassificationAnswer:
    """The reference accepts exactly Yes/yes/YES; we also read a trailing period and record the rest."""
    answer = text.strip().rstrip(".").strip()
    if answer in ("Yes", "yes", "YES"):
        return "yes"
    if answer in ("No", "no", "NO"):
        return "no"
    return "unparseable"


def _input_output(text: str) -> tuple[str, str]:
    parts = _OUTPUT.split(text)
    if len(parts) > 1:
        inst_input, inst_output = parts[0].strip(), parts[1].strip()
    else:
        inst_input, inst_output = "", text.strip()
    # several input/output pairs in one piece: keep the first output only
    inst_output = _INPUT.split(inst_output)[0].strip()
    inst_input = _LEADING_INPUT.sub("", inst_input).strip()
    return inst_input, inst_output


def generation_instances(text: str) -> list[tuple[str, str]]:
    """Input-first responses: `Example N` blocks, or a single `Output:`; nothing otherwise."""
    text = text.strip()
    if _EXAMPLE.search(text):
        return [_input_output(piece) for piece in (p.strip() for p in _EXAMPLE.split(text)) if piece]
    if _OUTPUT.search(text):
        return [_input_output(text)]
    return []


def classification_instances(text: str) -> list[tuple[str, str]]:
    """Output-first responses: `Class label: <label>` then the input on the following lines."""
    if "Class label:" not in text:
        return []
    out = []
    for piece in text.split("Class label:")[1:]:
        label, _, rest = piece.strip().partition("\n")
        out.append((rest.strip(), label.strip()))
    return out


def instances(text: str, is_classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs of an instance answer: output-first for classification, else input-first."""
    return classification_instances(text) if is_classification else generation_instances(text)
