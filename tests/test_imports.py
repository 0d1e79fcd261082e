"""The package's modules import each other without a cycle, hidden or not, and each one imports on its own.

A cycle can hide behind an import inside a function (it runs only when called) or work in one
import order and fail in another. So the graph is read from the source, every import statement
counted wherever it stands, and each module is also imported first in an interpreter that has
loaded no module of the package.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import THREADS

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "alexnet"


def package_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _imports(module: str) -> list[tuple[str, int]]:
    """(name, level) of every module named by an import statement of `module`, at the top or in a function."""
    found = []
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found.append((base, node.level))
            if node.level and not node.module:  # from . import a, b: each name is a module of the package
                found += [(alias.name, node.level) for alias in node.names]
    return found


def package_imports(module: str) -> set[str]:
    """The package's modules that `module` imports."""
    names = {name.split(".")[0] if level else name.removeprefix("alexnet.").split(".")[0]
             for name, level in _imports(module) if level or name.startswith("alexnet.")}
    return names & set(package_modules())


def outside_imports() -> set[str]:
    """Every module outside the package that the package imports (torch, torchvision, plotly, json...)."""
    return {name for module in package_modules() for name, level in _imports(module)
            if not level and name.split(".")[0] != "alexnet" and name != "__future__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path that comes back to where it started, e.g. ['a', 'b', 'a'], or None when the graph has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    return next((cycle for cycle in map(visit, sorted(graph)) if cycle), None)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"models": {"imagenet"}, "imagenet": {"checkpoints"}, "checkpoints": {"models"}}) == \
        ["checkpoints", "models", "imagenet", "checkpoints"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # two ways to one module: no cycle


def test_the_import_graph_has_no_cycle():
    graph = {module: package_imports(module) for module in package_modules()}
    assert graph["models"] and graph["checkpoints"] >= {"models", "weight_files"}  # the reader sees the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Run in a fresh interpreter: load what the package imports from elsewhere once, then fork a child per module
# that imports that module first, as an interpreter that had loaded no module of the package would.
FRESH_IMPORTS = r"""
import importlib, os, sys, traceback
for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional dependency: the child imports it if the module needs it
assert not [name for name in sys.modules if name.split(".")[0] == "alexnet"]
failed = []
for module in sys.argv[1].split(","):
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module("alexnet." + module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(module)
print("failed:", ",".join(failed))
"""


def test_each_module_imports_first_in_a_fresh_interpreter():
    modules = package_modules()
    out = subprocess.run([sys.executable, "-c", FRESH_IMPORTS, ",".join(modules), ",".join(sorted(outside_imports()))],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "failed:", out.stderr


HEAVY = ("torchvision", "captum", "scipy", "matplotlib")  # 1.5 s, 0.5 s, 0.3 s of a start: see imagenet.py's note


def test_a_training_process_and_the_command_line_start_without_the_heavy_libraries(mini_dir, tmp_path):
    """`python -m alexnet train` on CIFAR-10 (the command line, a whole tiny run with its record) and the Evaluate
    page's background pass over its weights (`analyse`, which loads them and checks that they are not the ImageNet
    model's) import none of them; building the ImageNet model does import torchvision, where it is needed."""
    probe = ("import sys\n"
             "from alexnet import cli\n"
             f"cli.main(['--runs', {str(tmp_path)!r}, 'train', '--name', 'tiny', '--data-dir', {str(mini_dir)!r}, "
             f"'--epochs', '1', '--max-train-images', '60', '--batch-size', '6', '--threads', '{THREADS}', "
             "'--quiet'])\n"
             f"cli.main(['--runs', {str(tmp_path)!r}, 'analyse', 'probabilities', '--run', 'tiny'])\n"
             f"print(*sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
             "from alexnet.models import build\n"
             "build('imagenet', 'none')\n"
             "print('torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["", "True"], out.stdout
    assert (tmp_path / "tiny" / "result.json").exists() and "probabilities of 1,017 test images" in out.stdout
