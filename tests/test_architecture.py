"""The import rules of docs/ARCHITECTURE.md, enforced: the rooms' arrows, no import cycle anywhere, no god file."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"ttsr_core", "pipeline", "db", "flows", "durable"}

# Third-party modules each room may import (stdlib is always allowed).
ALLOWED: dict[str, set[str]] = {
    # PIL: the paper's data pipeline is PIL bicubic (LR↓, LR↑, Ref↓↑), and train/evaluate read image
    # files; safetensors is the checkpoint format; tqdm draws the training progress bar.
    "ttsr_core": {"torch", "numpy", "PIL", "safetensors", "tqdm"},
    # c2pa, cryptography: Content Credentials (pipeline/provenance/credentials.py); cv2: local features and robust
    # geometry for verification, copy detection and restoration.
    "pipeline": {"torch", "numpy", "PIL", "faiss", "open_clip", "huggingface_hub", "pillow_heif", "safetensors",
                 "c2pa", "cryptography", "cv2"},
    "db": {"sqlalchemy", "alembic", "psycopg"},
    "flows": {"prefect", "prefect_dask", "torch", "numpy", "PIL", "sqlalchemy", "tqdm"},  # prefect_dask: [dask]
    "durable": set(),  # file helpers every room may use: the standard library only
}
PROJECT_DEPS = {"durable": set(), "ttsr_core": {"durable"}, "pipeline": {"ttsr_core", "durable"}, "db": {"durable"},
                "flows": {"pipeline", "ttsr_core", "db", "durable"}}
# Single modules of another room that a room may import beyond PROJECT_DEPS: the database stores the
# domain's own words, defined once. Such a module may import nothing but the standard library.
VOCABULARY: dict[str, set[str]] = {"db": {"pipeline.vocabulary"}}
MAX_LINES = 450  # a file longer than this does more than one job
MAX_FUNCTION_LINES = 80  # product code: a function longer than this hides steps that deserve names
MAX_WIDTH = 15  # modules directly in one folder; more and the folder needs rooms of its own
# Temporary allowances, each to be removed by the change named beside it.
LONG_FUNCTIONS: set[str] = set()
LONG_FILES = {
    "tests/db/test_queries.py",  # split by query subject after round 3's db branch merges (issue 23)
}
WIDE_FOLDERS: set[str] = set()
CHECKED_ELSEWHERE = {"benchmarks", "tests"}  # file length and folder width apply here too


def _sources() -> list[Path]:
    """Every project module, Alembic's own env.py and revisions excepted."""
    return [p for room in sorted(PROJECT) for p in sorted((ROOT / room).rglob("*.py")) if "migrations" not in p.parts]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Dotted names a file imports anywhere (top level, functions, TYPE_CHECKING), relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the module pkg.sub when there is one.
            names.update(f"{base}.{a.name}" for a in node.names)
            names.add(base)
    return names


def _graph() -> dict[str, set[str]]:
    """Project module → the project modules it imports."""
    modules = {_module(p): p for p in _sources()}
    return {name: {n for n in _imported(path) if n in modules and n != name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("room", sorted(PROJECT))
def test_room_imports_follow_the_architecture(room: str) -> None:
    problems: set[str] = set()
    for path in _sources():
        if path.relative_to(ROOT).parts[0] != room:
            continue
        for name in _imported(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top == room or not top:
                continue
            if top in PROJECT and top not in PROJECT_DEPS[room]:
                if name in VOCABULARY.get(room, set()) or name.rpartition(".")[0] in VOCABULARY.get(room, set()):
                    continue
                if name == top and any(n.startswith(top + ".") for n in _imported(path)):
                    continue  # `from pkg.module import x` also names pkg; the module itself is judged
                problems.add(f"{path.relative_to(ROOT)} imports {name} (the arrows point the other way)")
            elif top not in PROJECT and top not in ALLOWED[room]:
                problems.add(f"{path.relative_to(ROOT)} imports third-party {top}")
    assert not problems, "\n".join(sorted(problems))


def test_vocabulary_modules_import_only_the_standard_library() -> None:
    for module in set().union(*VOCABULARY.values()):
        path = ROOT / (module.replace(".", "/") + ".py")
        outside = {n for n in _imported(path) if n.split(".")[0] not in sys.stdlib_module_names | {"__future__"}}
        assert not outside, f"{module} imports {sorted(outside)}"


def test_no_import_cycle_anywhere() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" ↔ ".join(group) for group in cycles)


def test_the_cycle_finder_finds_cycles_inside_and_across_folders() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "b.p": {"a.x", "c.q"}, "c.q": {"b.p"}, "d": set()}
    assert _cycles(graph) == [["a.x", "a.y", "a.z"], ["b.p", "c.q"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_file_does_several_files_worth_of_work() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


# Inside ttsr_core the concerns stack one way: training uses the model, the model uses the speed-ups,
# and the modules directly in ttsr_core (config, device, arrays, metrics) sit under all three.
CORE_LAYERS = {"accel": set(), "model": {"accel"}, "training": {"model", "accel"}}


def test_ttsr_core_concerns_stack_one_way() -> None:
    problems = []
    for name, imported in _graph().items():
        parts = name.split(".")
        if parts[0] != "ttsr_core":
            continue
        own = parts[1] if len(parts) > 2 else None
        for target in imported:
            tparts = target.split(".")
            if tparts[0] != "ttsr_core" or len(tparts) < 3 or tparts[1] == own:
                continue
            if own is None or tparts[1] not in CORE_LAYERS[own]:
                problems.append(f"{name} imports {target}")
    assert not problems, "\n".join(sorted(problems))


def _all_python() -> list[Path]:
    """Product code, tests and benchmarks (Alembic's generated revisions excepted)."""
    rooms = sorted(PROJECT | CHECKED_ELSEWHERE)
    return [p for room in rooms for p in sorted((ROOT / room).rglob("*.py")) if "migrations" not in p.parts]


def test_no_test_or_benchmark_file_does_several_files_worth_of_work() -> None:
    long = {rel: n for p in _all_python() if p.relative_to(ROOT).parts[0] in CHECKED_ELSEWHERE
            and (rel := str(p.relative_to(ROOT))) not in LONG_FILES and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def _long_functions(path: Path, limit: int, base: Path = ROOT) -> dict[str, int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(base)
    return {f"{rel}:{node.name}": node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit}


def test_no_product_function_is_longer_than_the_limit() -> None:
    long = {name: n for p in _sources() for name, n in _long_functions(p, MAX_FUNCTION_LINES).items()
            if name not in LONG_FUNCTIONS}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_function_allowances_are_still_needed() -> None:
    """An allowance whose function shrank (or moved) is removed, so it cannot cover a new long function."""
    found = {name for p in _sources() for name in _long_functions(p, MAX_FUNCTION_LINES)}
    assert LONG_FUNCTIONS <= found, f"remove from LONG_FUNCTIONS: {sorted(LONG_FUNCTIONS - found)}"


def test_no_folder_holds_more_than_a_room_full_of_modules() -> None:
    width: dict[str, int] = {}
    for p in _all_python():
        if p.name != "__init__.py":
            folder = str(p.parent.relative_to(ROOT))
            width[folder] = width.get(folder, 0) + 1
    wide = {f: n for f, n in width.items() if n > MAX_WIDTH and f not in WIDE_FOLDERS}
    assert not wide, f"folders with more than {MAX_WIDTH} modules directly in them: {wide}"


def test_the_function_length_check_counts_def_to_last_line(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    sample = tmp_path / "probe.py"
    sample.write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert _long_functions(sample, MAX_FUNCTION_LINES, tmp_path) == {"probe.py:long": MAX_FUNCTION_LINES + 1}
