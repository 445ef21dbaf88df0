"""The dataset card (the dataset's README.md): what is in the directory, how it was made, the filter
decisions, the quality report beside the paper's Table 1, and how to load it."""

from __future__ import annotations

from typing import Any

import yaml

from jobs.method.outputs.report import FIGURES
from jobs.method.vocabulary import FILES, RULES

_STRING = {"dtype": "string"}
# Each instance file as a configuration of the Hugging Face `datasets` library, with its columns. The
# library reads one format a folder, so the header names the Parquet file alone when it is written
# (datasets.load_dataset(<the dataset's folder>) gives the instances), else the JSON ones.
CONFIGS = {
    FILES["parquet"]: (
        "instances",
        {
            **{name: _STRING for name in ("id", "instruction_id", "instruction", "input", "output")},
            "is_classification": {"dtype": "bool"},
            "source": _STRING,
        },
    ),
    FILES["alpaca"]: ("alpaca", {name: _STRING for name in ("instruction", "input", "output")}),
    FILES["finetune"]: (
        "finetune",
        {name: _STRING for name in ("prompt", "completion", "instruction", "input", "output")},
    ),
    FILES["chat"]: ("chat", {"messages": [{"role": _STRING, "content": _STRING}]}),
}


def write(
    records: dict[str, int],
    stats: dict[str, Any],
    run_record: dict[str, Any],
    quality: dict[str, Any],
) -> str:
    """The dataset card: what is in the directory, how it was made, how to load it; its YAML header is
    the one the Hugging Face Hub reads (configurations, features, licence, task categories)."""
    cfg = run_record["config"]
    lines = [
        *header(records),
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
        'ds = datasets.load_dataset("path/to/this/folder", split="train")  # the header\'s default',
        *(
            f'{CONFIGS[name][0]} = datasets.load_dataset("json", data_files="{name}", split="train")'
            for name in CONFIGS
            if name in records and name not in _written(records)
        ),
        "```",
        "",
        "Machine-generated data: review it before training on it; it inherits the model's errors.",
        "",
    ]
    return "\n".join(lines)


def _written(records: dict[str, int]) -> list[str]:
    """The instance files the header names, the default first."""
    if FILES["parquet"] in records:
        return [FILES["parquet"]]
    return [name for name in CONFIGS if name in records]


def header(records: dict[str, int]) -> list[str]:
    """The card's YAML header: a configuration per instance file it names (the first the default), each
    a train split with its features. The licence is `other`: the data's is the seed set's and
    the model's terms, which the job's owner knows."""
    written = _written(records)
    rows = max((records[name] for name in written), default=0)
    meta = {
        "license": "other",
        "task_categories": ["text-generation"],
        "tags": ["self-instruct", "synthetic", "instruction-tuning"],
        "size_categories": [_size(rows)],
        "configs": [
            {
                "config_name": CONFIGS[name][0],
                "data_files": [{"split": "train", "path": name}],
                **({"default": True} if i == 0 else {}),
            }
            for i, name in enumerate(written)
        ],
        "dataset_info": [
            {
                "config_name": CONFIGS[name][0],
                "features": [_feature(k, v) for k, v in CONFIGS[name][1].items()],
            }
            for name in written
        ],
    }
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def _feature(name: str, kind: Any) -> dict[str, Any]:
    """A column in the header's terms: a dtype, or a list of records with named string fields."""
    if isinstance(kind, list):
        return {"name": name, "list": [{"name": k, **v} for k, v in kind[0].items()]}
    return {"name": name, **kind}


def _size(rows: int) -> str:
    """The Hub's size category for this many rows."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < bound:
            return name
    return "100K<n<1M" if rows < 1_000_000 else "n>1M"


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
        *_selection(report.get("classification_selection")),
        *_judge(report.get("judge_scores")),
    ]
    return lines


def _judge(scores: dict[str, Any] | None) -> list[str]:
    """The LLM judge's score distribution, when the run had one."""
    if not scores:
        return []
    counts = " | ".join(str(n) for n in scores["counts"].values())
    return [
        f"LLM judge: each instance the filters kept scored 1-5 (mean {scores['mean']}); "
        f"{scores['unscored']} replies gave no score (kept). The rubric:",
        "",
        *(f"> {line}  " for line in scores["rubric"].splitlines()),
        "",
        f"| score | {' | '.join(scores['counts'])} |",
        f"|---|{'---|' * len(scores['counts'])}",
        f"| instances | {counts} |",
        "",
    ]


def _selection(selection: dict[str, Any] | None) -> list[str]:
    """classification_method auto's table, when the run chose its method so."""
    if not selection:
        return []
    if "skipped" in selection:
        chosen = selection.get("chosen", "knn")
        return [
            f"Classification method: `{chosen}`, chosen without a comparison ({selection['skipped']}).",
            "",
        ]
    lines = [
        f"Classification method: `{selection['chosen']}`, the cheapest of these within "
        f"{selection.get('margin', 0)} of the best balanced accuracy on the {selection['tasks']} seed tasks "
        f"outside the demonstrations ({selection['classification_tasks']} of them classification), each "
        "answered without its own label:",
        "",
        "| method | balanced accuracy | tp | fn | tn | fp |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in selection["methods"].items():
        counts = " | ".join(str(row[k]) for k in ("tp", "fn", "tn", "fp"))
        lines.append(f"| {method} | {row['balanced_accuracy']:.3f} | {counts} |")
    for method, why in selection.get("unavailable", {}).items():  # an endpoint's words: one table cell
        cell = " ".join(why.split()).replace("|", "\\|")
        lines.append(f"| {method} | not available: {cell} | | | | |")
    return [*lines, ""]
