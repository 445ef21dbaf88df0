"""The layout's rules: the method needs no infrastructure and owns its words (api_spec imports them),
the API process never loads the engine, no import circles, service/ leaves RQ to jobs/, and every Redis
key name is built in one module.

Every rule on imports reads every import statement in the source (function bodies included), so an
import deferred into a function cannot walk around it; the rules on what a process loads also run the
code that builds the app."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobs", "service", "api_spec", "client")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def loaded_after(code: str) -> set[str]:
    """Modules in sys.modules after running `code` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # the project uses absolute imports only
            base = node.module or ""
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_the_method_imports_no_infrastructure() -> None:
    method = sorted(m for m in modules() if m.startswith("jobs.method"))
    assert "jobs.method.engine" in method and "jobs.method.similarity" in method
    loaded = loaded_after("\n".join(f"import {m}" for m in method))
    assert set(method) <= loaded
    for forbidden in ("redis", "rq", "boto3", "botocore", "flask", "flask_smorest", "service"):
        assert forbidden not in loaded, f"jobs.method loads {forbidden}"


INFRASTRUCTURE = ("redis", "rq", "boto3", "botocore", "flask", "flask_smorest", "service", "api_spec")
# What runs the LLM: never in the API process (service/ and the api_spec/ it loads).
ENGINE = (
    "openai",
    "pyarrow",
    "jobs.method.engine",
    "jobs.method.run",
    "jobs.method.stage",
    "jobs.method.bootstrap",
    "jobs.method.classification",
    "jobs.method.instances",
    "jobs.method.llm",
    "jobs.method.accounting",
    "jobs.method.exports",
    "jobs.method.prompts",
    "jobs.method.similarity",
    "jobs.runner.context",
    "jobs.runner.generation",
    "jobs.runner.finalize",
    "jobs.runner.preview",
    "jobs.runner.reporter",
)


def test_the_api_process_does_not_load_the_engine() -> None:
    loaded = loaded_after("import service.app\nservice.app.create_app(configure_logging=False)")
    assert "service.app" in loaded and "flask" in loaded and "service.health" in loaded
    assert not set(ENGINE) & loaded, f"the API process loads {sorted(set(ENGINE) & loaded)}"


def test_no_import_cycles() -> None:
    found = modules()
    known = set(found)
    graph = {name: imports_of(name, path, known) for name, path in found.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert "jobs.method.run" in graph["jobs.method.bootstrap"]
    assert "jobs.method.bootstrap" in graph["jobs.method.engine"]


def raw_imports(path: Path) -> set[str]:
    """Every absolute name a file imports: `import a.b` gives a.b; `from a import b` gives a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_layers_point_one_way() -> None:
    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    for name, path in modules().items():
        uses = raw_imports(path)
        if under(name, "jobs"):
            assert not any(under(u, "service") or under(u, "flask") for u in uses), name
        if under(name, "service"):
            assert not any(under(u, "rq") for u in uses), f"{name} imports rq (jobs.runner.queue's)"
        if under(name, "jobs.method"):
            plumbing = {u for u in uses if under(u, "jobs") and not under(u, "jobs.method")}
            assert plumbing <= {"jobs", "jobs.__version__"}, f"{name} imports the plumbing: {plumbing}"
            infrastructure = {u for u in uses for p in INFRASTRUCTURE if under(u, p)}
            assert not infrastructure, f"{name} imports {sorted(infrastructure)}"
        if under(name, "service") or under(name, "api_spec"):
            engine = {u for u in uses for p in ENGINE if under(u, p)}
            assert not engine, f"{name} imports the engine: {sorted(engine)}"


# The floors of jobs/: each imports only the floors below it (store and blobs are one floor: a seed
# set's record sits beside its S3 file, and a decision archive is built from the Redis log).
FLOORS = (
    ("jobs.method",),
    ("jobs.settings", "jobs.logs", "jobs.retry", "jobs.webhooks"),
    ("jobs.store", "jobs.blobs"),
    ("jobs.runner",),
    ("jobs.tools", "jobs.__main__"),
)


def test_each_floor_imports_only_the_floors_below() -> None:
    def floor(name: str) -> int | None:
        for level, packages in enumerate(FLOORS):
            if any(name == p or name.startswith(p + ".") for p in packages):
                return level
        return None

    for name, path in modules().items():
        own = floor(name)
        if name.startswith("api_spec"):
            own = 1  # the contract may use the method's words and the webhooks', nothing of the plumbing
        if own is None:
            continue
        above = {u for u in raw_imports(path) if (level := floor(u)) is not None and level > own}
        assert not above, f"{name} imports from a floor above its own: {sorted(above)}"


def test_redis_key_names_are_built_in_keyspace_only() -> None:
    offenders = []
    for name, path in modules().items():
        if name == "jobs.store.keyspace":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                text = str(node.values[0].value)
            if text is not None and text.startswith("si:"):
                offenders.append(f"{name}:{node.lineno} {text!r}")
    assert not offenders, offenders
