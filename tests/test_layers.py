"""The layout's rules: the method needs no infrastructure and owns its words (api_spec imports them),
the API process never loads the engine, no import circles, service/ leaves RQ to jobs/, every Redis
key name is built in one module, and the method's rooms stand on floors: the stages and everything
else reach the transport through its interface only, and the outputs never reach into the stages.

Every rule on imports reads every import statement in the source (function bodies included, relative
ones resolved against their package), so an import deferred into a function cannot walk around it; an
import by name at run time (importlib, __import__) is refused outright. The rules on what a process loads
also run the code that builds the app."""

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


def package_of(name: str) -> str:
    """The package a module's relative imports start from (a package is its own)."""
    path = modules()[name]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def raw_imports(name: str) -> set[str]:
    """Every absolute name a project module imports, relative imports resolved: `import a.b` gives a.b;
    `from a import b` gives a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(modules()[name].read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package_of(name).split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def imports_of(name: str, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file (function bodies too)."""
    return {t for t in raw_imports(name) if t in known and t != name}


def dynamic_imports(path: Path) -> list[str]:
    """Imports by name at run time, which no rule here could follow."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name) and node.id == "__import__":
            found.append(f"{path.name}:{node.lineno} __import__")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            named = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n == "importlib" or n.startswith("importlib.") for n in named):
                found.append(f"{path.name}:{node.lineno} importlib")
    return found


def test_no_import_by_name_at_run_time() -> None:
    found = [hit for path in modules().values() for hit in dynamic_imports(path)]
    assert not found, found


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
    "jobs.method.accounting",
    "jobs.method.similarity",
    "jobs.method.stages",
    "jobs.method.transport",
    "jobs.method.outputs",
    "jobs.method.prompts",
    "jobs.runner.context",
    "jobs.runner.generation",
    "jobs.runner.finalize",
    "jobs.runner.preview",
    "jobs.runner.reporter",
)


def test_the_api_process_does_not_load_the_engine() -> None:
    loaded = loaded_after("import service.app\nservice.app.create_app(configure_logging=False)")
    assert "service.app" in loaded and "flask" in loaded and "service.health" in loaded
    engine = {m for m in loaded for p in ENGINE if m == p or m.startswith(p + ".")}
    assert not engine, f"the API process loads {sorted(engine)}"


def test_no_import_cycles() -> None:
    known = set(modules())
    graph = {name: imports_of(name, known) for name in known}
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
    assert "jobs.method.run" in graph["jobs.method.stages.bootstrap"]
    assert "jobs.method.stages.bootstrap" in graph["jobs.method.engine"]


def test_layers_point_one_way() -> None:
    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    for name in modules():
        uses = raw_imports(name)
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

    for name in modules():
        own = floor(name)
        uses = raw_imports(name)
        if name.startswith("api_spec"):
            # the contract may use the method's words and the webhooks', and of the plumbing only the
            # job store's states
            own = 1
            uses -= {"jobs.store.job", "jobs.store.job.JOB_STATES"}
        if own is None:
            continue
        above = {u for u in uses if (level := floor(u)) is not None and level > own}
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


# The method's rooms, from the ground up: the words; what a run commits and the texts it shows the model;
# the transport; a run's live state; the stages and the outputs; the engine over them. A module imports
# from its own floor and those below.
METHOD_FLOORS = (
    (
        "jobs.method.vocabulary",
        "jobs.method.fields",
        "jobs.method.recipe",
        "jobs.method.seed_tasks",
        "jobs.method.endpoint",
        "jobs.method.similarity",
        "jobs.method.decisions",
    ),
    ("jobs.method.checkpoint", "jobs.method.lineage", "jobs.method.prompts"),
    ("jobs.method.transport",),
    ("jobs.method.run", "jobs.method.accounting"),
    ("jobs.method.stages", "jobs.method.outputs"),
    ("jobs.method.engine",),
)


def method_floor(name: str) -> int | None:
    for level, rooms in enumerate(METHOD_FLOORS):
        if any(name == r or name.startswith(r + ".") for r in rooms):
            return level
    return None


def test_the_method_stands_on_floors() -> None:
    method = [m for m in modules() if m.startswith("jobs.method.")]
    unplaced = [m for m in method if method_floor(m) is None]
    assert not unplaced, f"modules on no floor: {unplaced}"
    known = set(modules())
    for name in method:
        own = method_floor(name)
        above = {u for u in imports_of(name, known) if (method_floor(u) or 0) > (own or 0)}
        assert not above, f"{name} imports from a floor above its own: {sorted(above)}"


def test_at_most_twelve_modules_directly_in_the_method() -> None:
    direct = sorted(p.stem for p in (ROOT / "jobs" / "method").glob("*.py") if p.name != "__init__.py")
    assert len(direct) <= 12, direct


def test_the_transport_is_reached_through_its_interface() -> None:
    """Outside jobs.method.transport, code imports the package (its __init__), never a module in it: the
    stages never ask which transport they got."""
    known = set(modules())
    inside = "jobs.method.transport."
    for name in known:
        if name.startswith(inside) or name == "jobs.method.transport":
            continue
        internals = {u for u in imports_of(name, known) if u.startswith(inside)}
        assert not internals, f"{name} imports the transport's internals: {sorted(internals)}"


def test_the_outputs_never_reach_into_the_stages() -> None:
    known = set(modules())
    for name in known:
        if name.startswith("jobs.method.outputs"):
            stages = {u for u in imports_of(name, known) if u.startswith("jobs.method.stages")}
            assert not stages, f"{name} imports the stages: {sorted(stages)}"
