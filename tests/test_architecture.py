"""The rooms' import rules from ARCHITECTURE.md, enforced: flows → pipeline → ttsr_core, flows → db."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"ttsr_core", "pipeline", "db", "flows"}

# Third-party modules each room may import (stdlib is always allowed).
ALLOWED: dict[str, set[str]] = {
    # PIL: the paper's data pipeline is PIL bicubic (LR↓, LR↑, Ref↓↑), and train/evaluate read image
    # files; safetensors is the checkpoint format; tqdm draws the training progress bar.
    "ttsr_core": {"torch", "numpy", "PIL", "safetensors", "tqdm"},
    "pipeline": {"torch", "numpy", "PIL", "faiss", "open_clip", "huggingface_hub", "pillow_heif", "safetensors"},
    "db": {"sqlalchemy", "alembic", "psycopg"},
    "flows": {"prefect", "torch", "numpy", "PIL", "sqlalchemy", "tqdm"},
}
PROJECT_DEPS = {"ttsr_core": set(), "pipeline": {"ttsr_core"}, "db": set(), "flows": {"pipeline", "ttsr_core", "db"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("room", sorted(PROJECT))
def test_room_imports_follow_the_architecture(room: str) -> None:
    problems = []
    for path in sorted((ROOT / room).rglob("*.py")):
        if "migrations" in path.parts:  # Alembic's own env.py and revisions
            continue
        for name in _imports(path):
            if name in sys.stdlib_module_names or name == "__future__" or name == room:
                continue
            if name in PROJECT and name not in PROJECT_DEPS[room]:
                problems.append(f"{path.relative_to(ROOT)} imports {name} (the arrows point the other way)")
            elif name not in PROJECT and name not in ALLOWED[room]:
                problems.append(f"{path.relative_to(ROOT)} imports third-party {name}")
    assert not problems, "\n".join(problems)
