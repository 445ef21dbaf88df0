"""What an extension carries over from the job it extends, read back from that job's dataset.

An extension continues a finished job to a larger target with the same seed set and recipe. Its stage 1
replays the earlier job's handled prompts from their recorded candidates, without requests, so the
pool grows exactly as it did (a candidate the earlier run dropped as target_reached is filtered this
time); a prompt past them is sent for real. The earlier instructions' classification answers and
instances are taken as they were, with their instance decisions. With an endpoint that answers a
request the same way each time, the extension's data files are those of a single run to the larger
target; its stats.json counts only the requests it made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.method.checkpoint import Checkpoint, ClassificationAnswer, InstanceRecord
from jobs.method.decisions import Decision


@dataclass
class Carried:
    extends: str  # the earlier job's id
    # stage-1 prompt -> completion -> its candidates in response order (every handled prompt up to
    # `last_prompt`; one with no candidates recorded had none)
    candidates: dict[int, dict[int, list[str]]] = field(default_factory=dict)
    last_prompt: int = -1
    classification: dict[str, ClassificationAnswer] = field(default_factory=dict)
    instances: dict[str, list[InstanceRecord]] = field(default_factory=dict)
    instance_decisions: list[Decision] = field(default_factory=list)

    @classmethod
    def read(
        cls, extends: str, decisions: Iterable[dict[str, Any]], instructions: Iterable[dict[str, Any]]
    ) -> Carried:
        """From the earlier dataset's decisions.jsonl and instructions.jsonl records."""
        carried = cls(extends)
        placed: dict[int, dict[int, list[tuple[int, str]]]] = {}
        kept: dict[str, list[tuple[int, InstanceRecord]]] = {}
        for record in decisions:
            source = record["source"]
            if record["stage"] == "instruction":
                by_completion = placed.setdefault(source["prompt"], {})
                by_completion.setdefault(source["completion"], []).append(
                    (source["position"], record["text"])
                )
                carried.last_prompt = max(carried.last_prompt, source["prompt"])
                continue
            decision = Decision.from_dict(record)
            carried.instance_decisions.append(decision)
            task = kept.setdefault(source["instruction_id"], [])
            if decision.rule == "kept":
                task.append((source["position"], {"input": decision.input or "", "output": decision.text}))
        carried.candidates = {
            i: {j: [text for _, text in sorted(found)] for j, found in by_completion.items()}
            for i, by_completion in placed.items()
        }
        carried.instances = {
            task: [inst for _, inst in sorted(found, key=lambda x: x[0])] for task, found in kept.items()
        }
        for row in instructions:
            if row.get("classification") is not None:
                answer = {"label": row["classification"], "raw": row["classification_raw"]}
                carried.classification[row["id"]] = {**answer, **row["classification_detail"]}  # type: ignore[typeddict-item]
        return carried

    def completions(self, prompt: int, n: int) -> list[list[str]] | None:
        """The recorded candidates of a handled stage-1 prompt's n completions; None past them."""
        if prompt > self.last_prompt:
            return None
        recorded = self.candidates.get(prompt, {})
        return [recorded.get(j, []) for j in range(n)]

    def seed(self) -> tuple[Checkpoint, list[Decision]]:
        """The extension's first state: the earlier answers and instances, counted, with their decisions
        (stage 1 starts from its first prompt and replays)."""
        counts: dict[str, dict[str, int]] = {}
        for answer in self.classification.values():
            labels = counts.setdefault("classification", {})
            labels[answer["label"]] = labels.get(answer["label"], 0) + 1
        for decision in self.instance_decisions:
            rules = counts.setdefault("instance", {})
            rules[decision.rule] = rules.get(decision.rule, 0) + 1
        checkpoint = Checkpoint(
            classification=dict(self.classification),
            instances={k: list(v) for k, v in self.instances.items()},
            counts=counts,
            decisions=len(self.instance_decisions),
        )
        return checkpoint, list(self.instance_decisions)
