"""Dataset files: the paper's fine-tuning JSONL, Alpaca JSON, OpenAI chat JSONL, Parquet, the instructions
and decisions, stats.json and run.json, with the report and the card (jobs.method.outputs).

Everything is a function of the checkpoint, the seed set and the config, so two runs that made the
same candidates write byte-identical files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import __version__
from jobs.method.checkpoint import Checkpoint
from jobs.method.decisions import Decision
from jobs.method.outputs import card, figures, report
from jobs.method.recipe import Recipe
from jobs.method.seed_tasks import SeedTask, content_hash
from jobs.method.vocabulary import FILES

if TYPE_CHECKING:  # the run module does not import this one: a type only
    from jobs.method.run import Run

# The reference's prompt/completion templates (prepare_for_finetuning.py).
TEMPLATES_WITH_INPUT = (
    ("{instruction}\nInput: {input}\nOutput:", " {output}<|endoftext|>"),
    ("{instruction}\n\nInput: {input}\n\nOutput:", " {output}<|endoftext|>"),
    ("Task: {instruction}\nInput: {input}\nOutput:", " {output}<|endoftext|>"),
    ("{instruction}\n\n{input}\n\nOutput:", " {output}<|endoftext|>"),
    ("{instruction}\n\n{input}\n\n", "{output}<|endoftext|>"),
    ("{instruction}\n{input}\n\n", "{output}<|endoftext|>"),
    ("Task: {instruction}\n\n{input}\n\n", "{output}<|endoftext|>"),
)
TEMPLATES_WITHOUT_INPUT = (
    ("{instruction} Output:", " {output}<|endoftext|>"),
    ("{instruction}\nOutput:", " {output}<|endoftext|>"),
    ("{instruction}\n\nOutput:", " {output}<|endoftext|>"),
    ("{instruction}\n", "{output}<|endoftext|>"),
    ("{instruction}\n\n", "{output}<|endoftext|>"),
    ("Task: {instruction}\n\n", "{output}<|endoftext|>"),
)


@dataclass(frozen=True)
class Example:
    id: str
    instruction_id: str
    instruction: str
    input: str
    output: str
    is_classification: bool
    source: str  # "machine" or "seed"


def examples(checkpoint: Checkpoint, seed_tasks: list[SeedTask], include_seed_tasks: bool) -> list[Example]:
    """Kept instances in pool order (then the seed set's own, if asked for)."""
    out = []
    for kept in checkpoint.instructions:
        is_clf = checkpoint.classification.get(kept["id"], {}).get("label") == "yes"
        for k, inst in enumerate(checkpoint.instances.get(kept["id"], [])):
            out.append(
                Example(
                    f"{kept['id']}#{k}",
                    kept["id"],
                    kept["text"],
                    inst["input"],
                    inst["output"],
                    is_clf,
                    "machine",
                )
            )
    if include_seed_tasks:
        for task in seed_tasks:
            for k, inst in enumerate(task.instances):
                out.append(
                    Example(
                        f"{task.id}#{k}",
                        task.id,
                        task.instruction,
                        inst.input,
                        inst.output,
                        task.is_classification,
                        "seed",
                    )
                )
    return out


def _finetune_records(items: list[Example], config: Recipe) -> list[dict[str, str]]:
    """The reference's encoding: input clean-up half the time, a random template, dedup, shuffle."""
    rng = config.rng("finetune")
    records, seen = [], set()
    for ex in items:
        inst_input = ex.input
        if rng.random() < 0.5:
            # a single `field:` name is dropped from the input; double newlines become single
            if len(set(re.findall(r"(\w+):", inst_input))) == 1:
                inst_input = inst_input.split(":", 1)[1].strip()
            else:
                inst_input = inst_input.strip()
            inst_input = inst_input.replace("\n\n", "\n")
        instruction, inst_input, output = ex.instruction.strip(), inst_input.strip(), ex.output.strip()
        templates = TEMPLATES_WITH_INPUT if inst_input else TEMPLATES_WITHOUT_INPUT
        prompt_t, completion_t = rng.choice(templates)
        prompt = prompt_t.format(instruction=instruction, input=inst_input)
        completion = completion_t.format(output=output)
        if (prompt, completion) in seen:
            continue
        seen.add((prompt, completion))
        records.append(
            {
                "prompt": prompt,
                "completion": completion,
                "instruction": instruction,
                "input": inst_input,
                "output": output,
            }
        )
    rng.shuffle(records)
    return records


def _chat(ex: Example) -> dict[str, Any]:
    user = ex.instruction.strip() + (f"\n\n{ex.input.strip()}" if ex.input.strip() else "")
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": ex.output.strip()}]
    }


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write(
    out_dir: str | Path,
    checkpoint: Checkpoint,
    seed_tasks: list[SeedTask],
    config: Recipe,
    decisions: Iterable[Decision],
    stats: dict[str, Any],
    run_record: dict[str, Any],
) -> dict[str, int]:
    """Write every file into out_dir; returns the record count of each data file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = examples(checkpoint, seed_tasks, config.include_seed_tasks)
    records: dict[str, int] = {}
    if "finetune" in config.export_formats:
        rows = _finetune_records(items, config)
        _jsonl(out / FILES["finetune"], rows)
        records[FILES["finetune"]] = len(rows)
    if "alpaca" in config.export_formats:
        _json(
            out / FILES["alpaca"],
            [{"instruction": e.instruction, "input": e.input, "output": e.output} for e in items],
        )
        records[FILES["alpaca"]] = len(items)
    if "chat" in config.export_formats:
        _jsonl(out / FILES["chat"], (_chat(e) for e in items))
        records[FILES["chat"]] = len(items)
    if "parquet" in config.export_formats:
        table = pa.Table.from_pylist(
            [e.__dict__ for e in items],
            schema=pa.schema(
                [
                    (name, pa.bool_() if name == "is_classification" else pa.string())
                    for name in Example.__dataclass_fields__
                ]
            ),
        )
        pq.write_table(table, out / FILES["parquet"])
        records[FILES["parquet"]] = len(items)

    instruction_rows = []
    for kept in checkpoint.instructions:
        label = checkpoint.classification.get(kept["id"], {})
        instruction_rows.append(
            {
                **kept,
                "classification": label.get("label"),
                "classification_raw": label.get("raw"),
                # method, log P(Yes), log P(No), calibrated margin, threshold, any fallback's reason
                "classification_detail": {k: v for k, v in label.items() if k not in ("label", "raw")},
                "instances": len(checkpoint.instances.get(kept["id"], [])),
            }
        )
    _jsonl(out / "instructions.jsonl", instruction_rows)
    records["instructions.jsonl"] = len(instruction_rows)
    pool_order = {kept["id"]: n for n, kept in enumerate(checkpoint.instructions)}

    def order(d: Decision) -> tuple[int, ...]:
        # a fixed order, however many workers appended to the log at once
        s = d.source
        if d.stage == "instruction":
            return (0, s["prompt"], s["completion"], s["position"])
        return (1, pool_order.get(s["instruction_id"], len(pool_order)), s["position"])

    ordered = sorted(decisions, key=order)
    _jsonl(out / "decisions.jsonl", (d.to_dict() for d in ordered))
    records["decisions.jsonl"] = len(ordered)
    _json(out / "stats.json", stats)
    _json(out / "run.json", run_record)
    quality = report.build(checkpoint, seed_tasks, stats)
    _json(out / "report.json", quality)
    figures.draw(quality, out)
    (out / "README.md").write_text(card.write(records, stats, run_record, quality), encoding="utf-8")
    return records


# --- a run's dataset ---


def export(run: Run, out_dir: str | Path, partial: bool = False) -> dict[str, int]:
    """Write the run's dataset files into out_dir and mark the run done; returns records per file.

    `partial` exports what a stopped run made so far (its stage is left as it was)."""
    if not partial and run.checkpoint.stage not in ("export", "done"):
        raise RuntimeError(f"the run is at stage {run.checkpoint.stage!r}, not ready to export")
    records = write(
        out_dir,
        run.checkpoint,
        run.seed_tasks,
        run.recipe,
        run.store.decisions(),
        stats(run),
        run_record(run),
    )
    if not partial:
        run.advance("done")
    return records


def stats(run: Run) -> dict[str, Any]:
    """stats.json: what the run kept and dropped, and what it spent."""
    cp = run.checkpoint
    usage = run.usage.to_dict()
    wall = run.elapsed
    counts = {stage: dict(sorted(rules.items())) for stage, rules in sorted(cp.counts.items())}
    return {
        "engine_version": __version__,
        "stop_reason": cp.stop_reason,
        "instructions_kept": len(cp.instructions),
        "instances_kept": sum(len(v) for v in cp.instances.values()),
        "tasks_with_instances": sum(1 for v in cp.instances.values() if v),
        "verdicts": {s: c for s, c in counts.items() if s in ("instruction", "instance")},
        "classification": counts.get("classification", {}),
        "classification_method": classification_method(cp),
        # the LLM judge's scores (score or "unscored" -> instances), when the recipe asks for it
        **({"judge_scores": counts["judge"]} if "judge" in counts else {}),
        "truncated_responses": cp.truncated_responses,
        "requests": usage["requests"],
        "retries": usage["retries"],
        "failed_attempts": usage["errors"],
        "tokens": {
            "prompt": sum(usage["prompt_tokens"].values()),
            "completion": sum(usage["completion_tokens"].values()),
            "prompt_by_stage": usage["prompt_tokens"],
            "completion_by_stage": usage["completion_tokens"],
            # semantic deduplication's embedding requests' (a run without them records as before)
            **({"embeddings": usage["embedding_tokens"]} if usage["embedding_tokens"] else {}),
        },
        "wasted": cp.wasted,
        # sampling parameters the endpoint refused and the run went on without
        "dropped_parameters": usage.get("dropped", {}),
        "wall_seconds": round(wall, 3),
        "endpoint_busy_seconds": usage["busy_seconds"],
        "endpoint_busy_fraction": round(usage["busy_seconds"] / wall, 4) if wall > 0 else 0.0,
        # requests held back until the endpoint's rate limit reset, instead of drawing a 429
        "rate_limit_waits": {"requests": usage["rate_limit_waits"], "seconds": usage["rate_limit_seconds"]},
        "cost": run.accounting.cost(),
    }


def run_record(run: Run) -> dict[str, Any]:
    """run.json: everything needed to run it again."""
    return {
        "run_id": run.run_id,
        "engine_version": __version__,
        "seed_set": {"sha256": content_hash(run.seed_tasks), "tasks": len(run.seed_tasks)},
        "instance_demonstrations": run.prompts.demonstrations,
        "random_seed": run.recipe.seed,
        "endpoint": run.endpoint.public(run.usage.dropped),
        # semantic deduplication's embeddings (a run without it records as before)
        **(
            {"embeddings": run.embeddings.public()}
            if run.embeddings and run.recipe.semantic_threshold is not None
            else {}
        ),
        "config": run.recipe.record(run.execution),
        "classification_method": classification_method(run.checkpoint),
        **({"extends": run.carried.extends} if run.carried else {}),
    }


def classification_method(checkpoint: Checkpoint) -> dict[str, Any]:
    """How stage 2 decided: answers per method, why any fell back to text, the shift and threshold, and
    for auto the table it chose the method from (`selection`)."""
    methods: dict[str, int] = {}
    fallbacks: dict[str, int] = {}
    shared: dict[str, Any] = {}
    for answer in checkpoint.classification.values():
        method = answer.get("method", "text")
        methods[method] = methods.get(method, 0) + 1
        if reason := answer.get("fallback"):
            fallbacks[reason] = fallbacks.get(reason, 0) + 1
        if not shared and ("shift" in answer or "threshold" in answer):
            shared = {k: answer[k] for k in ("shift", "threshold") if k in answer}
    selection = (checkpoint.calibration or {}).get("selection")
    return {
        "methods": methods,
        "fallbacks": fallbacks,
        **shared,
        **({"selection": selection} if selection else {}),
    }
