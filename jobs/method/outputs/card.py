"""The dataset card (the dataset's README.md): what is in the directory, how it was made, the filter
decisions, the quality report beside the paper's Table 1, and how to load it."""

from __future__ import annotations

from typing import Any

from jobs.method.outputs.report import FIGURES
from jobs.method.vocabulary import FILES, RULES


def write(
    records: dict[str, int],
    stats: dict[str, Any],
    run_record: dict[str, Any],
    quality: dict[str, Any],
) -> str:
    """The dataset card: what is in the directory, how it was made, how to load it."""
    cfg = run_record["config"]
    lines = [
        "# Self-Instruct dataset",
        "",
        f"Generated with the SELF-INSTRUCT method (Wang et al., 2022) by selfinstruct-service "
        f"{run_record['engine_version']}, run `{run_record['run_id']}`.",
        "",
        "## Contents",
        "",
        "| file | records | what |",
        "|---|---|---|",
    ]
    what = {
        FILES[
            "finetune"
        ]: "prompt/completion pairs in the paper's varied templates (also instruction/input/output)",
        FILES["alpaca"]: "a JSON list of {instruction, input, output} (Stanford Alpaca format)",
        FILES["chat"]: "OpenAI chat fine-tuning records ({messages: [user, assistant]})",
        FILES["parquet"]: "one row per instance with ids and the classification flag",
        "instructions.jsonl": "kept machine instructions with classification answer and nearest pool item",
        "decisions.jsonl": "one record per candidate instruction and instance: kept or dropped, rule, detail",
    }
    for name, count in records.items():
        lines.append(f"| `{name}` | {count} | {what.get(name, '')} |")
    lines += ["", "`stats.json` holds the counts, tokens and timings; `run.json` the configuration.", ""]
    lines += [
        "## How it was made",
        "",
        f"- seed set: {run_record['seed_set']['tasks']} tasks, sha256 `{run_record['seed_set']['sha256']}`",
        f"- model: `{run_record['endpoint']['model']}` through `/v1/{_path(run_record['endpoint'])}`; "
        f"random seed {run_record['random_seed']}",
        *([f"- extends job `{run_record['extends']}` to this target"] if "extends" in run_record else []),
        f"- target {cfg['num_instructions']} instructions; stop reason: {stats.get('stop_reason')}",
        f"- kept {stats['instructions_kept']} instructions and {stats['instances_kept']} instances",
        *_cost(stats),
        f"- ROUGE-L threshold {cfg['similarity_threshold']}; "
        f"at most {cfg['max_instances_per_task']} instances a task",
        "",
        "## Filter decisions",
        "",
        "| stage | rule | count | meaning |",
        "|---|---|---|---|",
    ]
    for stage, rules in stats["verdicts"].items():
        for rule, count in rules.items():
            lines.append(f"| {stage} | `{rule}` | {count} | {RULES[rule]} |")
    lines += ["", *section(quality)]
    lines += [
        "## Loading",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("parquet", data_files="{FILES["parquet"]}")',
        f'alpaca = datasets.load_dataset("json", data_files="{FILES["alpaca"]}")',
        "```",
        "",
        "Machine-generated data: review it before training on it; it inherits the model's errors.",
        "",
    ]
    return "\n".join(lines)


def _cost(stats: dict[str, Any]) -> list[str]:
    """A priced profile's cost line (tokens vary with concurrency: the card stays byte-stable without)."""
    cost = stats.get("cost")
    if not cost:
        return []
    stages = ", ".join(f"{stage} {amount:.6f}" for stage, amount in cost["by_stage"].items())
    tokens = f"{stats['tokens']['prompt']} prompt and {stats['tokens']['completion']} completion tokens"
    return [f"- {tokens}; cost {cost['total']:.6f} {cost['currency']} ({stages})"]


def _path(endpoint: dict[str, Any]) -> str:
    return "chat/completions" if endpoint.get("api") == "chat" else "completions"


def section(report: dict[str, Any]) -> list[str]:
    """The dataset card's quality section: Table 1 beside the paper's, and the figures."""
    lines = [
        "## Quality report",
        "",
        "`report.json` holds everything below and the figures' data. Table 1 of the paper, beside it:",
        "",
        "| statistic | this dataset | paper |",
        "|---|---|---|",
    ]
    for row in report["table1"]:
        lines.append(f"| {row['statistic'].replace('_', ' ')} | {row['this_dataset']} | {row['paper']} |")
    per = report["instances_per_instruction"]
    lines += [
        f"| instances per instruction | {per['this_dataset']} | {per['paper']} |",
        "",
        f"Distinct labels per classification instruction: "
        f"{report['distinct_labels_per_classification_instruction']}.",
        "",
        f"![ROUGE-L against the most similar seed instruction (the paper's Figure 3)]({FIGURES['rouge']})",
        "",
        f"![Instruction, non-empty input and output lengths (the paper's Figure 4)]({FIGURES['lengths']})",
        "",
    ]
    return lines
