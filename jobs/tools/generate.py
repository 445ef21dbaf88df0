"""Command line: run a whole generation locally, with progress bars.

    python -m jobs generate --seed-tasks seeds.jsonl --num-instructions 20 --out out/ --seed 1
    python -m jobs generate --seed-tasks seeds.jsonl --instructions mine.jsonl --out out/

Without --base-url it starts the embedded local model and stops it afterwards. Running the same
command again with the same --out resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jobs import logs
from jobs.method.checkpoint import FileStore
from jobs.method.endpoint import EmbeddingEndpoint, Endpoint
from jobs.method.engine import execute
from jobs.method.outputs import exports
from jobs.method.recipe import BEFORE_FIELDS, CLASSIFICATION_METHODS, EXPORT_FORMATS, Execution, Recipe
from jobs.method.run import BudgetReached, Run
from jobs.method.seed_tasks import (
    SeedSetError,
    content_hash,
    instructions_hash,
    parse_instructions_jsonl,
    parse_jsonl,
)
from jobs.method.transport import EndpointError
from jobs.tools.embedding_model import EMBEDDING_ALIAS, EmbeddingModel
from jobs.tools.local_model import MODEL_ALIAS, REQUEST_OPTIONS, LocalModel

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class StageBars:
    """The engine's progress reports on stderr: a tqdm bar per stage on a terminal; elsewhere (a CI log)
    a plain line when the stage changes and at most every LINE_SECONDS."""

    LINE_SECONDS = 5.0

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: tqdm | None = None
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, progress: dict[str, Any]) -> None:
        tokens = progress["prompt_tokens"] + progress["completion_tokens"]
        if not self.tty:
            now = time.monotonic()
            if progress["stage"] != self.stage or now - self.last_line >= self.LINE_SECONDS:
                self.stage, self.last_line = progress["stage"], now
                done = f"{progress['stage_done']}/{progress['stage_total']}"
                print(f"{self.stage:>14}: {done}; tokens {tokens}", file=sys.stderr, flush=True)
            return
        if progress["stage"] != self.stage:
            self.close()
            self.stage = progress["stage"]
            self.bar = tqdm(total=progress["stage_total"], desc=f"{self.stage:>14}", unit="it", leave=True)
        assert self.bar is not None
        self.bar.total = progress["stage_total"]
        self.bar.n = progress["stage_done"]
        self.bar.set_postfix(tokens=tokens, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _recipe(args: argparse.Namespace) -> tuple[Recipe, Execution]:
    """The recipe (checked) and the execution settings the flags, or a previous run.json, give."""
    if args.run_json:
        config = BEFORE_FIELDS | json.loads(Path(args.run_json).read_text())["config"]
        execution = {k: config.pop(k) for k in ("concurrency", "checkpoint_every") if k in config}
        if args.concurrency:
            execution["concurrency"] = args.concurrency
        return Recipe.build(config), Execution(**execution)
    given = {
        "num_instructions": args.num_instructions,
        "seed": args.seed,
        "window": args.window,
        "max_requests": args.max_requests,
        "max_tokens": args.max_tokens,
        "include_seed_tasks": args.include_seed_tasks,
        "instance_followup": not args.no_instance_followup,
        "classification_only": args.classification_only,
        "classification_method": args.classification_method,
        "judge_threshold": args.judge_threshold,
        "semantic_threshold": args.semantic_threshold,
        "export_formats": args.formats,
    }
    if args.decoding:
        given["decoding"] = json.loads(args.decoding)
    return Recipe.build(given), Execution(concurrency=args.concurrency or 4)


def _read(path: str, parse: Callable[[bytes], Any], what: str) -> Any:
    """The parsed file, or None after every bad line and field is printed on stderr."""
    try:
        return parse(Path(path).read_bytes())
    except SeedSetError as e:
        print(f"error: {path} is not a valid {what}:", file=sys.stderr)
        for err in e.errors:
            print(f"  line {err.line}: {err.field}: {err.message}", file=sys.stderr)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
    return None


def request_options(args: argparse.Namespace, embedded: bool) -> dict[str, Any]:
    """The endpoint's request options from the flags; the embedded model's own where none is given."""
    given = {
        "max_tokens_param": args.max_tokens_param,
        "send_seed": args.send_seed,
        "reasoning": args.reasoning or None,
    }
    return {**(REQUEST_OPTIONS if embedded else {}), **{k: v for k, v in given.items() if v is not None}}


def generate(args: argparse.Namespace) -> int:
    seed_tasks = _read(args.seed_tasks, parse_jsonl, "seed set")
    if seed_tasks is None:
        return EXIT_BAD_INPUT
    given = None
    if args.instructions:  # a stage-level run: instances for exactly these instructions
        given = _read(args.instructions, parse_instructions_jsonl, "instruction file")
        if given is None:
            return EXIT_BAD_INPUT
    try:
        recipe, execution = _recipe(args)
        if given is not None:
            recipe = replace(recipe, num_instructions=len(given))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    out = Path(args.out)
    state_dir = out / ".checkpoint"
    # llama.cpp's server constrains chat replies to a schema given as json_object
    response_format = args.response_format or (
        "json_object" if args.api == "chat" and not args.base_url else None
    )
    if response_format and args.api != "chat":
        print("error: --response-format is for --api chat", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (args.reasoning or args.max_tokens_param == "max_completion_tokens") and args.api != "chat":
        print(
            "error: --reasoning and --max-tokens-param max_completion_tokens are for --api chat",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    identity = {
        "config": recipe.to_dict(),
        "seed_set": content_hash(seed_tasks),
        "api": [args.api, response_format],
    }
    if given is not None:
        identity["instructions"] = instructions_hash(given)
    identity_file = state_dir / "identity.json"
    if identity_file.exists() and json.loads(identity_file.read_text()) != identity:
        print(f"error: {out} holds a different run; choose another --out or delete it", file=sys.stderr)
        return EXIT_BAD_INPUT
    state_dir.mkdir(parents=True, exist_ok=True)
    identity_file.write_text(json.dumps(identity))

    api_key = os.environ.get(args.api_key_env, "sk-local") if args.api_key_env else "sk-local"
    local = None if args.base_url else LocalModel(log_file=state_dir / "local-model.log")
    semantic = recipe.semantic_threshold is not None
    embedder = (
        EmbeddingModel(log_file=state_dir / "embedding-model.log")
        if semantic and not args.embeddings_url
        else None
    )
    options = request_options(args, embedded=local is not None)
    bars = StageBars()
    with local or nullcontext(), embedder or nullcontext():
        embeddings = None
        if semantic:
            url = args.embeddings_url or embedder.base_url  # type: ignore[union-attr]
            embeddings = EmbeddingEndpoint(url, args.embeddings_model or EMBEDDING_ALIAS, api_key=api_key)
        endpoint = Endpoint(
            base_url=args.base_url or local.base_url,  # type: ignore[union-attr]
            model=args.model or MODEL_ALIAS,
            api_key=api_key,
            timeout=args.timeout,
            api=args.api,
            response_format=response_format,
            **options,
        )
        run = Run(
            args.run_id or out.name,
            seed_tasks,
            recipe,
            endpoint,
            FileStore(state_dir),
            progress=bars,
            given=given,
            execution=execution,
            embeddings=embeddings,
        )
        try:
            try:
                execute(run)
                records = exports.export(run, out)
            except BudgetReached:  # --max-tokens spent: what was made so far, as a partial dataset
                records = exports.export(run, out, partial=True)
        except EndpointError as e:
            bars.close()
            print(f"error: the endpoint failed: {e}\nRun the same command again to resume.", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            bars.close()
            print("\ninterrupted; run the same command again to resume.", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            bars.close()
    stats = exports.stats(run)
    print(f"\nwrote {out.resolve()}/")
    for name, count in records.items():
        print(f"  {name:<20} {count:>7} records")
    print(
        f"instructions kept {stats['instructions_kept']}, instances kept {stats['instances_kept']}, "
        f"stop reason {stats['stop_reason']}; tokens {stats['tokens']['prompt']} prompt + "
        f"{stats['tokens']['completion']} completion; wall {stats['wall_seconds']:.1f} s, "
        f"endpoint busy {stats['endpoint_busy_fraction']:.1%}"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m jobs", description="Self-Instruct generation, locally."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", allow_abbrev=False, help="run a whole generation into a directory")
    g.add_argument("--seed-tasks", required=True, help="seed tasks, JSONL in the paper's format")
    g.add_argument("--num-instructions", type=int, default=20)
    g.add_argument(
        "--instructions",
        help="JSONL of {instruction, id?}: skip stage 1 and make instances for exactly these instructions",
    )
    g.add_argument("--out", required=True, help="output directory (also holds the checkpoint)")
    g.add_argument("--seed", type=int, default=42, help="random seed of the run")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint; default: start the embedded local model")
    g.add_argument("--model", help=f"model name (default {MODEL_ALIAS})")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument(
        "--api",
        choices=("completions", "chat"),
        default="completions",
        help="completions: a base model continues the paper's prompts; chat: an instruction-following model",
    )
    g.add_argument(
        "--response-format",
        choices=("json_schema", "json_object"),
        help="chat: constrain replies to JSON (json_schema: OpenAI, vLLM; json_object: llama.cpp, the "
        "default for the embedded model)",
    )
    g.add_argument(
        "--max-tokens-param",
        choices=("max_completion_tokens", "max_tokens"),
        help="chat: the token cap's name (default max_completion_tokens; max_tokens for llama.cpp's "
        "servers and the embedded model)",
    )
    g.add_argument(
        "--send-seed",
        action=argparse.BooleanOptionalAction,
        help="send each request's seed (default: on completions and for the embedded model, not on chat)",
    )
    g.add_argument(
        "--reasoning",
        action="store_true",
        help="chat: a reasoning model; send none of the sampling parameters it refuses",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight (default: 4, what the embedded model decodes at once)",
    )
    g.add_argument(
        "--window", type=int, default=Recipe.window, help="stage-1 prompts that may be in flight (recipe)"
    )
    g.add_argument("--max-requests", type=int, help="stage-1 request budget")
    g.add_argument("--max-tokens", type=int, help="stage-1 token budget")
    g.add_argument("--formats", nargs="+", default=list(EXPORT_FORMATS), choices=EXPORT_FORMATS)
    g.add_argument("--include-seed-tasks", action="store_true", help="add the seed instances to the exports")
    g.add_argument(
        "--no-instance-followup",
        action="store_true",
        help="one instance request per instruction (the paper); default: one-instance answers ask again",
    )
    g.add_argument("--classification-only", action="store_true")
    g.add_argument(
        "--semantic-threshold",
        type=float,
        metavar="COSINE",
        help="drop instructions whose embedding's cosine with a pool item's is above this",
    )
    g.add_argument("--embeddings-url", help="OpenAI-compatible /v1/embeddings; default: the embedded one")
    g.add_argument("--embeddings-model", help=f"embedding model name (default {EMBEDDING_ALIAS})")
    g.add_argument(
        "--judge-threshold",
        type=int,
        metavar="N",
        help="the LLM judge: score every kept instance 1-5 with the model, drop those under N",
    )
    g.add_argument(
        "--classification-method",
        choices=CLASSIFICATION_METHODS,
        default="auto",
        help="stage 2: text (the paper's greedy answer), logprobs, calibrated (content-free inputs), fitted "
        "(threshold fitted on the seed tasks), knn (nearest seed tasks by wording); auto: the best of them "
        "on the seed tasks outside the demonstrations, asked of this endpoint",
    )
    g.add_argument("--decoding", help='per-stage overrides, JSON: {"instructions": {"temperature": 1.0}}')
    g.add_argument("--run-json", help="take the whole configuration from a previous run.json")
    g.add_argument("--run-id", help="name of the run (default: the --out directory name)")
    args = parser.parse_args(argv)
    logs.configure("WARNING")
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
