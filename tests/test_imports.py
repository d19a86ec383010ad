"""Import rules: no cycles in ``batch/`` + ``lookup_api/``; ``batch`` uses only ``lookup_api.contract``.

The graph is built from every ``import`` statement (module level or inside a function) with
``ast``; then each module is imported first thing, in a fresh interpreter, so an import that
only works in some order fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("batch", "lookup_api")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Return the project modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] in PACKAGES}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_real_imports():
    edges = graph()
    assert "batch.store" in edges["batch.lifecycle"] and "lookup_api.contract.items" in edges["batch.job"]
    assert "batch.job" in edges["batch.cli.ops"]  # imported inside the command function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(graph()) == []


SHARED_WITH_BATCH = ("lookup_api.contract", "lookup_api.embedded_redis", "lookup_api.paths",
                     "lookup_api.where")


def test_batch_imports_only_the_contract_from_lookup_api():
    """Besides the contract, the batch shares only the local runtime: the embedded server, the paths."""
    bad = {(m, t) for m, targets in graph().items() if m.startswith("batch")
           for t in targets if t.startswith("lookup_api") and not t.startswith(SHARED_WITH_BATCH)}
    assert bad == set()


def test_lookup_api_imports_nothing_from_batch():
    bad = {(m, t) for m, targets in graph().items() if m.startswith("lookup_api")
           for t in targets if t.startswith("batch")}
    assert bad == set()


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module is imported with no project module loaded before it (third-party ones stay cached)."""
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {sorted(modules())!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in ('batch', 'lookup_api')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=1).splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_imports_neither_the_evaluation_nor_matplotlib(small_dir):
    """``recsys-batch run`` (a dry run, in a fresh interpreter) loads no module of the `eval` extra."""
    code = (
        "import sys\n"
        "from batch.cli import main\n"
        f"sys.argv = ['recsys-batch', '--data-dir', {str(small_dir)!r}, '-q', 'run', '--dry-run']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'\n"
        "                or m.startswith('batch.evaluation'))\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def test_the_batch_install_has_no_eval_extra():
    """What the nightly image installs (``uv sync --frozen --no-dev --extra batch``, Dockerfile.batch)
    holds no matplotlib; the `eval` extra and the dev group do."""
    import shutil

    uv = shutil.which("uv")
    assert uv, "uv is needed to read the lock"

    def packages(*extras: str) -> set[str]:
        args = [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-header", "--no-emit-project"]
        out = subprocess.run([*args, *(f"--extra={e}" for e in extras)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        return {line.split("==")[0].strip().lower() for line in out.splitlines() if "==" in line}

    assert "matplotlib" not in packages("batch") and "implicit" in packages("batch")
    assert "matplotlib" in packages("batch", "eval")
    assert "--extra batch --no-editable" in (ROOT / "Dockerfile.batch").read_text()
    assert "--extra eval" not in (ROOT / "Dockerfile.batch").read_text()
