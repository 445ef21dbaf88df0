"""Seed tasks: parse and validate a seed set (JSONL or JSON records), reporting every bad line and field;
and the other JSONL a team uploads, checked the same way: instruction files and reference sets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from jobs.method.fields import Name, StrictBoolean, Text

MAX_REPORTED_ERRORS = 100
# Limits on one seed task; the set-level limits live in jobs.settings.
MAX_INSTRUCTION_CHARS = 2_000
MAX_FIELD_CHARS = 10_000
MAX_INSTANCES_PER_TASK = 50


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class InstanceSchema(Schema):
    input = Text(required=True, validate=validate.Length(max=MAX_FIELD_CHARS))
    output = Text(required=True, validate=validate.Length(min=1, max=MAX_FIELD_CHARS))


class SeedTaskSchema(Schema):
    """One seed task, as in the paper's `seed_tasks.jsonl` (also accepts its user-oriented set)."""

    id = Name(required=True, validate=validate.Length(min=1, max=200))
    name = Name(validate=validate.Length(max=200))
    # a field validator, not a schema one, so that a blank instruction is reported with the other fields
    instruction = Text(
        required=True, validate=[validate.Length(min=1, max=MAX_INSTRUCTION_CHARS), _not_blank]
    )
    instances = fields.List(
        fields.Nested(InstanceSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_INSTANCES_PER_TASK),
    )
    is_classification = StrictBoolean(load_default=False, dump_default=False)
    motivation_app = Name(validate=validate.Length(max=200))


class GivenInstructionSchema(Schema):
    """One instruction of a stage-level run: instances are made for it as it is (no stage 1)."""

    class Meta:
        unknown = RAISE

    id = Name(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Default: `line<N>` in a file, `item<N>` in a list (1-based)."},
    )
    instruction = Text(
        required=True, validate=[validate.Length(min=1, max=MAX_INSTRUCTION_CHARS), _not_blank]
    )


_schema = SeedTaskSchema()
_instruction_schema = GivenInstructionSchema()


class ReferenceItemSchema(Schema):
    """One item of a reference set (an evaluation prompt, a benchmark's question): what a job's data must
    not contain. Other fields (an answer, a label) are allowed and not read."""

    class Meta:
        unknown = EXCLUDE

    id = Name(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Default: `line<N>` (1-based)."},
    )
    text = Text(required=True, validate=[validate.Length(min=1, max=MAX_FIELD_CHARS), _not_blank])


_reference_schema = ReferenceItemSchema()


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool = False
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.name is not None:
            out["name"] = self.name
        out["instruction"] = self.instruction
        out["instances"] = [{"input": i.input, "output": i.output} for i in self.instances]
        out["is_classification"] = self.is_classification
        return out


@dataclass(frozen=True)
class FieldError:
    """One problem: `line` is the 1-based line of a JSONL upload (None for a JSON body)."""

    field: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "message": self.message}


class SeedSetError(ValueError):
    what = "seed set"

    def __init__(self, errors: list[FieldError]):
        self.errors = errors[:MAX_REPORTED_ERRORS]
        self.truncated = len(errors) > MAX_REPORTED_ERRORS
        first = errors[0]
        where = f"line {first.line}, " if first.line is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid {self.what}: {where}{first.field}: {first.message}{more}")


class InstructionsError(SeedSetError):
    what = "instruction list"


class ReferenceSetError(SeedSetError):
    what = "reference set"


@dataclass
class _Collector:
    errors: list[FieldError] = field(default_factory=list)

    def add_messages(self, messages: Any, prefix: str, line: int | None) -> None:
        """Flatten marshmallow's nested error dict into dotted field paths."""
        if isinstance(messages, dict):
            for key, sub in messages.items():
                path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else key)
                self.add_messages(sub, path, line)
        elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
            for m in messages:
                self.errors.append(FieldError(prefix or "(task)", m, line))
        else:
            self.errors.append(FieldError(prefix or "(task)", str(messages), line))


def _to_task(data: dict[str, Any]) -> SeedTask:
    return SeedTask(
        id=data["id"],
        name=data.get("name"),
        instruction=data["instruction"],
        instances=tuple(Instance(i["input"], i["output"]) for i in data["instances"]),
        is_classification=data["is_classification"],
    )


def _objects(
    items: Iterable[tuple[int | None, str, Any]], limit: int, noun: str, col: _Collector
) -> Iterator[tuple[int, int | None, str, dict[str, Any]]]:
    """(count, line, field prefix, object) for each item that is a JSON object, up to `limit` items;
    what is not (an undecodable line, another JSON value, one item too many) goes to `col`."""
    for count, (line, prefix, value) in enumerate(items, start=1):
        if count > limit:
            col.errors.append(FieldError(prefix or "(file)", f"more than {limit} {noun}", line))
            return
        if isinstance(value, Exception):
            col.errors.append(FieldError(prefix or "(line)", str(value), line))
        elif not isinstance(value, dict):
            col.errors.append(FieldError(prefix or "(line)", "must be a JSON object", line))
        else:
            yield count, line, prefix, value


def _validate(items: Iterable[tuple[int | None, str, Any]], max_tasks: int) -> list[SeedTask]:
    """items: (line, field prefix, decoded JSON value or an Exception for a line that did not decode)."""
    col = _Collector()
    tasks: list[SeedTask] = []
    seen_ids: dict[str, str] = {}
    for _, line, prefix, value in _objects(items, max_tasks, "tasks", col):
        data: dict[str, Any] | None = None
        messages: Any = {}
        try:
            data = _schema.load(value)
        except ValidationError as e:
            messages = e.messages
            col.add_messages(messages, prefix, line)
        # a duplicate id is reported along with the task's other faults
        task_id = value.get("id")
        if isinstance(task_id, str) and "id" not in messages:
            if task_id in seen_ids:
                col.errors.append(
                    FieldError(
                        f"{prefix}.id" if prefix else "id",
                        f"duplicate id, first used at {seen_ids[task_id]}",
                        line,
                    )
                )
                continue
            seen_ids[task_id] = f"line {line}" if line is not None else prefix
        if data is not None:
            tasks.append(_to_task(data))
    if not col.errors and not tasks:
        col.errors.append(FieldError("tasks", "the seed set has no tasks"))
    if col.errors:
        raise SeedSetError(col.errors)
    return tasks


def _decode_lines(data: bytes) -> Iterable[tuple[int | None, str, Any]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield number, "", ValueError(f"invalid UTF-8 at byte {e.start}")
            continue
        try:
            yield number, "", json.loads(text)
        except RecursionError:
            yield number, "", ValueError("JSON nested too deeply")
        except json.JSONDecodeError as e:
            yield number, "", ValueError(f"invalid JSON: {e.msg} at column {e.colno}")


def parse_jsonl(data: bytes, max_tasks: int = 10_000) -> list[SeedTask]:
    """Parse a JSONL seed file; raises SeedSetError listing every bad line and field."""
    return _validate(_decode_lines(data), max_tasks)


def parse_records(records: list[Any], max_tasks: int = 10_000) -> list[SeedTask]:
    """Parse seed tasks given as decoded JSON (a request body); fields are reported as tasks[i].field."""
    return _validate(((None, f"tasks[{i}]", r) for i, r in enumerate(records)), max_tasks)


def load_file(path: str | Path) -> list[SeedTask]:
    return parse_jsonl(Path(path).read_bytes())


def canonical_jsonl(tasks: list[SeedTask]) -> bytes:
    """One normalised line per task: the same tasks give the same bytes, however they were sent."""
    return "".join(json.dumps(t.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for t in tasks).encode()


def content_hash(tasks: list[SeedTask]) -> str:
    return hashlib.sha256(canonical_jsonl(tasks)).hexdigest()


# --- instruction files: the instructions of a stage-level run ---


def _validate_instructions(items: Iterable[tuple[int | None, str, Any]], limit: int) -> list[dict[str, str]]:
    """Checkpoint entries {"id", "text"}; raises InstructionsError naming every bad line and field,
    duplicate ids and duplicate (whitespace-normalised) instructions included."""
    col = _Collector()
    out: list[dict[str, str]] = []
    first_id: dict[str, str] = {}
    first_text: dict[str, str] = {}
    for count, line, prefix, value in _objects(items, limit, "instructions", col):
        where = f"line {line}" if line is not None else prefix
        id_field, text_field = (f"{prefix}.id", f"{prefix}.instruction") if prefix else ("id", "instruction")
        try:
            data = _instruction_schema.load(value)
        except ValidationError as e:
            col.add_messages(e.messages, prefix, line)
            data = e.valid_data if isinstance(e.valid_data, dict) else {}
        item_id = data.get("id") or (f"line{line}" if line is not None else f"item{count}")
        if item_id in first_id:
            col.errors.append(FieldError(id_field, f"duplicate id, first used at {first_id[item_id]}", line))
        first_id.setdefault(item_id, where)
        if "instruction" not in data:
            continue
        text = " ".join(data["instruction"].split())
        if text in first_text:
            col.errors.append(
                FieldError(text_field, f"duplicate instruction, first at {first_text[text]}", line)
            )
            continue
        first_text[text] = where
        out.append({"id": item_id, "text": data["instruction"].strip()})
    if not col.errors and not out:
        col.errors.append(FieldError("instructions", "there are no instructions"))
    if col.errors:
        raise InstructionsError(col.errors)
    return out


def parse_instructions_jsonl(data: bytes, limit: int = 100_000) -> list[dict[str, str]]:
    """An instruction file: JSONL, one {"instruction", "id"?} object a line."""
    return _validate_instructions(_decode_lines(data), limit)


def parse_instruction_records(records: list[Any], limit: int = 100_000) -> list[dict[str, str]]:
    """Instructions given as decoded JSON (a request body); fields are reported as instructions[i].field."""
    return _validate_instructions(((None, f"instructions[{i}]", r) for i, r in enumerate(records)), limit)


def instructions_hash(instructions: list[dict[str, str]]) -> str:
    lines = "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in instructions)
    return hashlib.sha256(lines.encode()).hexdigest()


# --- reference sets: what a job's instructions and instances are checked against (decontamination) ---


def parse_references_jsonl(data: bytes, limit: int = 200_000) -> list[dict[str, str]]:
    """A reference set: JSONL, one {"text", "id"?} object a line (other fields ignored), as
    {"id", "text"}; raises ReferenceSetError naming every bad line and field, duplicate ids included."""
    col = _Collector()
    out: list[dict[str, str]] = []
    first_id: dict[str, int | None] = {}
    for _, line, prefix, value in _objects(_decode_lines(data), limit, "items", col):
        try:
            item = _reference_schema.load(value)
        except ValidationError as e:
            col.add_messages(e.messages, prefix, line)
            continue
        item_id = item.get("id") or f"line{line}"
        if item_id in first_id:
            col.errors.append(FieldError("id", f"duplicate id, first used at line {first_id[item_id]}", line))
            continue
        first_id[item_id] = line
        out.append({"id": item_id, "text": item["text"]})
    if not col.errors and not out:
        col.errors.append(FieldError("items", "the reference set has no items"))
    if col.errors:
        raise ReferenceSetError(col.errors)
    return out
