"""`selfinstruct`: preview a recipe, submit seed tasks, follow a job's events, download the dataset.

    selfinstruct preview seeds.jsonl --for 2000
    selfinstruct submit seeds.jsonl --instructions 2000 --max-cost 5 --wait --download out/
    selfinstruct extend JOB --instructions 4000 --wait --download out/
    selfinstruct logs JOB --follow
    selfinstruct decisions JOB --verdict dropped --search "haiku poem"
    selfinstruct verify-webhook --secret whsec_... --headers headers.txt --body body.json

Exit codes: 0 succeeded (or submitted, without --wait), 1 failed, 2 bad input, 3 canceled,
4 the service could not be reached or failed, 130 interrupted (the job goes on; see `cancel`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from client import webhooks
from client.api import ApiError, Client

OK, FAILED, BAD_INPUT, CANCELED, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130
STATE_EXIT = {"succeeded": OK, "failed": FAILED, "canceled": CANCELED}


class Bar:
    """A job's progress on stderr: a tqdm bar per stage on a terminal; elsewhere (a CI log) a plain line
    when the stage changes and at most every LINE_SECONDS, instead of a carriage-return stream."""

    LINE_SECONDS = 5.0

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stage: str | None = None
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, job: dict[str, Any]) -> None:
        if job["state"] in ("succeeded", "failed", "canceled"):
            return
        p = job["progress"]
        stage = job["stage"] or job["state"]
        eta = job.get("eta_seconds")
        postfix = {"kept": p["instructions_kept"], "tokens": p["prompt_tokens"] + p["completion_tokens"]}
        if eta is not None:
            postfix["left"] = f"{eta:.0f}s"
        if not self.tty:
            now = time.monotonic()
            if stage != self.stage or now - self.last_line >= self.LINE_SECONDS:
                self.stage, self.last_line = stage, now
                done = f"{p['stage_done']}/{p['stage_total']}" if p["stage_total"] else str(p["stage_done"])
                facts = ", ".join(f"{k} {v}" for k, v in postfix.items())
                print(f"{stage:>14}: {done}; {facts}", file=sys.stderr, flush=True)
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=p["stage_total"] or None, desc=f"{stage:>14}", file=sys.stderr)
        assert self.bar is not None
        self.bar.total = p["stage_total"] or None
        self.bar.n = p["stage_done"]
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _money(cost: dict[str, Any] | None) -> str:
    return f"{cost['total']:.4f} {cost['currency']}" if cost else ""


def summary(client: Client, job: dict[str, Any], out: Path | None) -> None:
    p = job["progress"]
    cost = f", cost {_money(job['cost'])}" if job.get("cost") else ""
    stop = f" (stopped: {job['stop_reason']})" if job.get("stop_reason") else ""
    print(
        f"job {job['id']}: {job['state']}{stop}; {p['instructions_kept']} instructions, "
        f"{p['instances_kept']} instances, {p['prompt_tokens'] + p['completion_tokens']} tokens{cost}"
    )
    if job.get("error"):
        print(f"error: {job['error']}")
    if out is not None and job["state"] == "canceled" and not job.get("dataset_available"):
        # a canceled (or budget-stopped) job's partial dataset is exported just after it stops
        for _ in range(60):
            job = client.job(job["id"])
            if job.get("dataset_available"):
                break
            time.sleep(1)
    if out is not None and job.get("dataset_available"):
        paths = client.download(job["id"], out)
        manifest = {f["name"]: f for f in client.manifest(job["id"])["files"]}
        print(f"dataset in {out.resolve()}/")
        for path in paths:
            records = manifest[path.name]["records"]
            print(
                f"  {path.name:<20} {manifest[path.name]['bytes']:>10} bytes"
                + (f" {records:>7} records" if records is not None else "")
            )
        if "stats.json" in manifest:  # this job's, just downloaded
            stats = json.loads((out / "stats.json").read_text())
            if how := stats.get("classification_method"):
                print(_selection(how))
            if scores := stats.get("judge_scores"):
                print(_judged(scores, stats["verdicts"].get("instance", {}).get("judge_low_score", 0)))


def _judged(scores: dict[str, int], dropped: int) -> str:
    """The LLM judge's scores, and how many instances it dropped."""
    listed = ", ".join(f"{score}: {n}" for score, n in scores.items())
    return f"judge scores ({listed}); {dropped} instances dropped under the threshold"


def _selection(how: dict[str, Any]) -> str:
    """How stage 2 decided; for classification_method auto, what it chose from."""
    methods = ", ".join(f"{m} {n}" for m, n in how["methods"].items())
    selection = how.get("selection")
    if not selection:
        return f"classification: {methods or 'none'}"
    if "methods" not in selection:
        return f"classification (auto): {methods}; no comparison ({selection['skipped']})"
    table = ", ".join(f"{m} {r['balanced_accuracy']:.3f}" for m, r in selection["methods"].items())
    return (
        f"classification (auto): {selection['chosen']}, the cheapest within {selection.get('margin', 0)} of "
        f"the best balanced accuracy on {selection['tasks']} seed tasks outside the demonstrations: {table}"
    )


def submit(client: Client, args: argparse.Namespace) -> int:
    seed_set = client.create_seed_set(args.seeds, name=args.name or Path(args.seeds).name)
    print(
        f"seed set {seed_set['id'][:12]}: {seed_set['tasks']} tasks, "
        f"{seed_set['classification_tasks']} classification, {seed_set['instances']} instances"
    )
    options: dict[str, Any] = {"seed": args.seed}
    for name in ("max_cost", "max_tokens", "judge_threshold", "semantic_threshold"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.profile:
        options["profile"] = args.profile
    if args.formats:
        options["export_formats"] = args.formats
    if args.dedup_against:
        options["dedup_against"] = "team" if args.dedup_against == ["team"] else args.dedup_against
    if args.notify_url:
        options["notify_url"] = args.notify_url
    if args.push_to_hub:
        options["push_to_hub"] = {"repo_id": args.push_to_hub, "private": not args.public}
    if args.decontaminate:
        options["decontaminate_against"] = []
        for path in args.decontaminate:
            reference = client.create_reference_set(path, name=Path(path).name)
            print(f"reference set {reference['id'][:12]}: {reference['items']} items ({Path(path).name})")
            options["decontaminate_against"].append(reference["id"])
    job = client.create_job(
        seed_set["id"], args.instructions, idempotency_key=args.idempotency_key or uuid.uuid4().hex, **options
    )
    print(f"job {job['id']} {job['state']}")
    if not args.wait:
        return OK
    return follow(client, job["id"], Path(args.download) if args.download else None)


def follow(client: Client, job_id: str, out: Path | None) -> int:
    bar = Bar()
    try:
        job = client.wait(job_id, on_progress=bar, poll=1.0)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped waiting; the job goes on (selfinstruct cancel {job_id})", file=sys.stderr)
        return INTERRUPTED
    bar.close()
    summary(client, job, out)
    return STATE_EXIT[job["state"]]


def _short(text: str | None, width: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def preview(client: Client, args: argparse.Namespace) -> int:
    seed_set = client.create_seed_set(args.seeds, name=args.name or Path(args.seeds).name)
    options: dict[str, Any] = {"seed": args.seed}
    if args.profile:
        options["profile"] = args.profile
    if args.full:
        options["full_num_instructions"] = args.full
    for name in ("similarity_threshold", "judge_threshold", "semantic_threshold"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.temperature is not None:
        options["decoding"] = {"instructions": {"temperature": args.temperature}}
    p = client.preview(seed_set["id"], args.instructions, **options)
    if p["state"] == "failed":
        print(f"preview {p['id']} failed: {p['error']}", file=sys.stderr)
        return FAILED
    result = p["result"]
    print(f"preview {p['id']} ({result['seconds']:.1f} s, {result['requests']} requests)\n")
    print("candidates:")
    for c in result["candidates"]:
        detail = c.get("detail") or {}
        near = (
            f"  ~{detail['score']:.2f} to: {_short(c.get('nearest_text'), 60)}" if "score" in detail else ""
        )
        print(f"  [{c['rule']:<22}] {_short(c['text'])}{near}")
    print("\nkept:")
    for k in result["kept"]:
        label = (k.get("classification") or {}).get("label")
        print(f"- {_short(k['text'])}  (classification: {label})")
        for inst in k["instances"]:
            given = f"input: {_short(inst['input'], 50)} -> " if inst["input"] else ""
            print(f"    {given}output: {_short(inst['output'], 70)}{_score(inst)}")
        for d in k["dropped_instances"]:
            print(f"    dropped [{d['rule']}]: {_short(d['output'], 60)}{_score(d)}")
    tokens = result["tokens"]
    print(f"\ntokens: {tokens['prompt']} prompt, {tokens['completion']} completion", end="")
    print(f"; cost {_money(result['cost'])}" if result["cost"] else "")
    estimate = result["estimate"]
    if estimate and estimate["full_job"]:
        full = estimate["full_job"]
        cost = f", about {full['cost']:.4f} {estimate['currency']}" if full["cost"] is not None else ""
        print(
            f"a {full['num_instructions']}-instruction job: about {full['prompt_tokens']} prompt and "
            f"{full['completion_tokens']} completion tokens{cost}"
        )
    return OK


def _score(instance: dict[str, Any]) -> str:
    if "judge_score" not in instance:
        return ""
    return f"  (judge {instance['judge_score']}: {_short(instance['judge_rationale'], 60)})"


def _event_line(event: dict[str, Any]) -> str:
    import datetime

    at = datetime.datetime.fromtimestamp(event["at"]).strftime("%H:%M:%S")
    data = dict(event["data"])
    kind = event["type"]
    if kind == "state":
        previous = data.pop("previous", None)
        text = f"{previous or '-'} -> {data.pop('state')}"
    elif kind in ("stage_started", "stage_ended"):
        text = f"{data.pop('stage')}"
    elif kind == "warning":
        text = data.pop("message")
    else:
        text = ""
    rest = " ".join(f"{k}={v}" for k, v in sorted(data.items()) if v is not None)
    return f"{at} {kind:<13} {text} {rest}".rstrip()


def logs(client: Client, args: argparse.Namespace) -> int:
    try:
        for event in client.events(args.job_id, follow=args.follow):
            print(_event_line(event), flush=True)
    except KeyboardInterrupt:
        return INTERRUPTED
    return OK


def decisions(client: Client, args: argparse.Namespace) -> int:
    """A line per decision (id, verdict, rule, score, text), or its JSON with --json."""
    filters = {k: v for k in ("stage", "verdict", "rule") if (v := getattr(args, k))}
    if args.search is not None:
        filters["q"] = args.search
    for n, d in enumerate(client.decisions(args.job_id, **filters)):
        if args.max is not None and n >= args.max:
            break
        if args.json:
            print(json.dumps(d, ensure_ascii=False), flush=True)
            continue
        score = d["detail"].get("score")
        text = f"{d['input']} -> {d['text']}" if d["input"] else d["text"]
        score_text = f"{score:.3f}" if isinstance(score, (int, float)) else "-"
        print(f"{d['id']}\t{d['verdict']}\t{d['rule']}\t{score_text}\t{text}", flush=True)
    return OK


def verify_webhook(args: argparse.Namespace) -> int:
    """0 when the delivery is the service's (signed with the secret, recent enough), else 1 and why."""
    if not args.secret:
        print("error: give --secret (or SELFINSTRUCT_WEBHOOK_SECRET)", file=sys.stderr)
        return BAD_INPUT
    if args.headers:
        headers = webhooks.read_headers(Path(args.headers).read_text(encoding="utf-8"))
    elif args.timestamp is None or args.signature is None:
        print("error: --id goes with --timestamp and --signature", file=sys.stderr)
        return BAD_INPUT
    else:
        headers = {
            "webhook-id": args.id,
            "webhook-timestamp": args.timestamp,
            "webhook-signature": args.signature,
        }
    try:
        event = webhooks.verify(args.secret, headers, Path(args.body).read_bytes(), tolerance=args.tolerance)
    except webhooks.InvalidWebhook as e:
        print(f"invalid: {e}")
        return FAILED
    described = [str(event.get(k)) for k in ("type", "id") if k in event] if isinstance(event, dict) else []
    print(" ".join(["valid:", *described]))
    return OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="selfinstruct", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SELFINSTRUCT_URL", "http://127.0.0.1:8000"),
        help="the service (env SELFINSTRUCT_URL)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("SELFINSTRUCT_API_KEY"), help="env SELFINSTRUCT_API_KEY"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", allow_abbrev=False, help="upload seed tasks and start a job")
    s.add_argument("seeds", help="seed tasks, JSONL in the paper's format")
    s.add_argument("--instructions", type=int, required=True, help="instructions to generate")
    s.add_argument("--profile", help="endpoint profile (see GET /v1/profiles)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--formats", nargs="+", help="finetune alpaca chat parquet (default: all)")
    s.add_argument("--name", help="a label for the seed set")
    s.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    s.add_argument(
        "--dedup-against",
        nargs="+",
        metavar="JOB",
        help="earlier job ids whose instructions this job must not repeat, or: team (every dataset kept)",
    )
    s.add_argument(
        "--decontaminate",
        nargs="+",
        metavar="FILE",
        help='reference sets (JSONL, one {"text"} a line: evaluation prompts, a benchmark\'s questions) the '
        "job's instructions and instances must not overlap",
    )
    judge_help = "score every instance 1-5 with the profile's model; drop those under N (see the API)"
    s.add_argument("--judge-threshold", type=int, metavar="N", help=judge_help)
    semantic_help = "drop instructions whose embedding's cosine with a pool item's is above this"
    s.add_argument("--semantic-threshold", type=float, metavar="COSINE", help=semantic_help)
    s.add_argument("--max-cost", type=float, help="stop the job (partial dataset) once it costs this much")
    s.add_argument("--max-tokens", type=int, help="stop the job (partial dataset) after this many tokens")
    s.add_argument(
        "--notify-url", metavar="URL", help="post the job's end there, signed (see verify-webhook)"
    )
    s.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="also push the dataset to this Hub dataset repository (namespace/name)",
    )
    s.add_argument(
        "--public", action="store_true", help="with --push-to-hub: a repository made now is public"
    )
    s.add_argument("--wait", action="store_true", help="follow the job to its end")
    s.add_argument("--download", metavar="DIR", help="with --wait: download the dataset into DIR")
    w = sub.add_parser("wait", allow_abbrev=False, help="follow a job (and download its dataset)")
    w.add_argument("job_id")
    w.add_argument("--download", metavar="DIR")
    x = sub.add_parser(
        "extend", allow_abbrev=False, help="continue a finished job to more instructions (a new job)"
    )
    x.add_argument("job_id")
    x.add_argument("--instructions", type=int, required=True, help="the larger target")
    x.add_argument("--wait", action="store_true", help="follow the new job to its end")
    x.add_argument("--download", metavar="DIR", help="with --wait: download the dataset into DIR")
    c = sub.add_parser("cancel", allow_abbrev=False, help="cancel a job")
    c.add_argument("job_id")
    pv = sub.add_parser("preview", allow_abbrev=False, help="try a recipe on a few instructions")
    pv.add_argument("seeds", help="seed tasks, JSONL in the paper's format")
    pv.add_argument("--instructions", type=int, help="instructions to preview (default 5)")
    pv.add_argument("--for", dest="full", type=int, metavar="N", help="estimate an N-instruction job")
    pv.add_argument("--profile")
    pv.add_argument("--seed", type=int, default=42)
    pv.add_argument("--similarity-threshold", type=float)
    pv.add_argument("--temperature", type=float, help="stage 1 temperature")
    pv.add_argument("--judge-threshold", type=int, metavar="N", help=judge_help)
    pv.add_argument("--semantic-threshold", type=float, metavar="COSINE", help=semantic_help)
    pv.add_argument("--name", help="a label for the seed set")
    lg = sub.add_parser("logs", allow_abbrev=False, help="a job's events")
    lg.add_argument("job_id")
    lg.add_argument("--follow", "-f", action="store_true", help="keep following until the job ends")
    dc = sub.add_parser("decisions", allow_abbrev=False, help="a job's decisions, filtered or searched")
    dc.add_argument("job_id")
    dc.add_argument("--stage", choices=["instruction", "instance"])
    dc.add_argument("--verdict", choices=["kept", "dropped"])
    dc.add_argument("--rule", help="a rule name (GET /v1/rules)")
    dc.add_argument("--search", metavar="TEXT", help="decisions whose text or input has these words")
    dc.add_argument("--max", type=int, metavar="N", help="stop after N decisions")
    dc.add_argument("--json", action="store_true", help="print each decision's JSON")
    v = sub.add_parser(
        "verify-webhook",
        allow_abbrev=False,
        help="check a received webhook's signature (exit 0 valid, 1 invalid)",
    )
    v.add_argument(
        "--secret",
        default=os.environ.get("SELFINSTRUCT_WEBHOOK_SECRET"),
        help="the team's whsec_ secret (env SELFINSTRUCT_WEBHOOK_SECRET)",
    )
    given = v.add_mutually_exclusive_group(required=True)
    given.add_argument("--headers", metavar="FILE", help="the request's headers: `Name: value` lines or JSON")
    given.add_argument("--id", help="the webhook-id header (with --timestamp and --signature)")
    v.add_argument("--timestamp", help="the webhook-timestamp header")
    v.add_argument("--signature", help="the webhook-signature header")
    v.add_argument("--body", metavar="FILE", required=True, help="the request's body, byte for byte")
    v.add_argument(
        "--tolerance",
        type=float,
        default=webhooks.DEFAULT_TOLERANCE_SECONDS,
        metavar="SECONDS",
        help="refuse a timestamp further from now than this (default 300; 0: any age)",
    )
    args = parser.parse_args(argv)
    if args.command == "verify-webhook":  # offline: no service involved
        try:
            return verify_webhook(args)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return BAD_INPUT
    client = Client(args.url, args.api_key)
    try:
        if args.command == "submit":
            return submit(client, args)
        if args.command == "wait":
            return follow(client, args.job_id, Path(args.download) if args.download else None)
        if args.command == "preview":
            return preview(client, args)
        if args.command == "logs":
            return logs(client, args)
        if args.command == "decisions":
            return decisions(client, args)
        if args.command == "extend":
            job = client.extend(args.job_id, args.instructions)
            print(f"job {job['id']} {job['state']} (extends {args.job_id})")
            return (
                follow(client, job["id"], Path(args.download) if args.download else None) if args.wait else OK
            )
        job = client.cancel(args.job_id)
        print(f"job {job['id']} {job['state']}")
        return OK
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return UNAVAILABLE if e.status >= 500 else BAD_INPUT
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT if not isinstance(e, ConnectionError) else UNAVAILABLE
    except httpx.HTTPError as e:
        print(f"error: cannot reach {args.url}: {e}", file=sys.stderr)
        return UNAVAILABLE
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
