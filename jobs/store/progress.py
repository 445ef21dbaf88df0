"""The progress fields of a job's record (jobs.store.job): the one place that writes and reads them.

Each run of a job (the main one, each chunk of a fanned-out job) writes its own absolute counters under
its part name, and readers sum the parts, so a resumed run picks up from its checkpoint without double
counting:

    p:<part>:<counter>         a counter of COUNTERS
    t:<part>:<stage>:<kind>    tokens of one stage, kind prompt or completion (cost by stage)
    w:<parameter>              a sampling parameter the endpoint refused: what it said (any part)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTERS = (
    "stage_done",
    "stage_total",
    "instructions_kept",
    "instances_kept",
    "prompt_tokens",
    "completion_tokens",
    "requests",
)
TOKEN_KINDS = ("prompt", "completion")


def fields(part: str, progress: dict[str, Any], main: bool) -> dict[str, int]:
    """A run's report as record fields. The stage total is the main run's own field (`stage_total`),
    and only the main run counts kept instructions (chunks hold copies of them)."""
    names = [n for n in COUNTERS if n != "stage_total" and (main or n != "instructions_kept")]
    out = {f"p:{part}:{n}": int(progress[n]) for n in names}
    for kind in TOKEN_KINDS:
        for stage, n in progress.get(f"{kind}_by_stage", {}).items():
            out[f"t:{part}:{stage}:{kind}"] = int(n)
    return out


def refusals(dropped: dict[str, str]) -> dict[str, str]:
    """Refused parameters as record fields: one a parameter, whichever part saw it."""
    return {f"w:{name}": reason for name, reason in dropped.items()}


def totals(raw: Mapping[str, str]) -> dict[str, int]:
    """The counters summed over every part; `stage_total` is the main run's."""
    out = dict.fromkeys(COUNTERS, 0)
    out["stage_total"] = int(raw.get("stage_total", 0))
    for name, value in raw.items():
        if name.startswith("p:"):
            counter = name.rsplit(":", 1)[1]
            if counter in out:
                out[counter] += int(value)
    return out


def tokens_by_stage(raw: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Tokens by kind, then stage, summed over the parts."""
    out: dict[str, dict[str, int]] = {kind: {} for kind in TOKEN_KINDS}
    for name, value in raw.items():
        key = name.split(":")
        if len(key) == 4 and key[0] == "t" and key[3] in out:
            out[key[3]][key[2]] = out[key[3]].get(key[2], 0) + int(value)
    return out


def tokens_elsewhere(raw: Mapping[str, str], part: str) -> tuple[int, int]:
    """Prompt and completion tokens of every part but `part`."""
    prompt = completion = 0
    for name, value in raw.items():
        key = name.split(":")
        if len(key) == 3 and key[0] == "p" and key[1] != part:
            if key[2] == "prompt_tokens":
                prompt += int(value)
            elif key[2] == "completion_tokens":
                completion += int(value)
    return prompt, completion


def warnings(raw: Mapping[str, str]) -> list[str]:
    return [f"parameter {k[2:]} dropped: {v}" for k, v in sorted(raw.items()) if k.startswith("w:")]


def folded(raw: Mapping[str, str]) -> tuple[list[str], dict[str, int]]:
    """A finished job's per-part fields folded into the main part's: (fields to delete, fields to set).
    Its record then no longer grows with the number of chunks."""
    parts = [name for name in raw if name.startswith(("p:", "t:"))]
    out = {f"p:main:{name}": value for name, value in totals(raw).items() if name != "stage_total"}
    for kind, stages in tokens_by_stage(raw).items():
        out |= {f"t:main:{stage}:{kind}": n for stage, n in stages.items()}
    return parts, out
