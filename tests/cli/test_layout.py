"""The CLI package's shape: no import cycle inside it, and parsing a command line loads none of
the heavy modules (engine, S3 client, uvicorn, numpy) that only some commands need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.server_process import REPO_ROOT

PACKAGE = "tierdb.cli"
CLI_DIR = REPO_ROOT / "tierdb" / "cli"


def _module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_within_cli() -> dict[str, set[str]]:
    """module -> the CLI modules it imports (anywhere in the file, lazy imports included)."""
    modules = {_module_name(p): p for p in CLI_DIR.glob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                # ``from . import x`` names module x if it exists, else a name of the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_cli_package_exists_with_its_entry_point() -> None:
    assert (CLI_DIR / "__init__.py").is_file()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'tierdb = "tierdb.cli:main"' in pyproject


def test_no_cli_module_imports_the_package_or_a_module_that_imports_it_back() -> None:
    graph = _imports_within_cli()
    assert f"{PACKAGE}.importer" in graph[PACKAGE] and f"{PACKAGE}.exit_codes" in graph[f"{PACKAGE}.remote"]  # the scan sees imports
    back_to_package = sorted(m for m, targets in graph.items() if m != PACKAGE and PACKAGE in targets)
    assert not back_to_package, f"these modules import {PACKAGE} itself: {back_to_package}"
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_parsing_a_command_line_loads_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from tierdb.cli import build_parser\n"
        "for argv in (['serve'], ['export', 'x.jsonl', '--collection', 'c'], ['import', 'x.npy', '--collection', 'c'],\n"
        "             ['collections'], ['dlq', 'list', '--collection', 'c']):\n"
        "    build_parser().parse_args(argv)\n"
        "heavy = ('numpy', 'uvicorn', 'litestar', 'httpx', 'aiobotocore', 'hnswlib', 'tierdb.engine', 'tierdb.storage', 'tierdb.api')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
