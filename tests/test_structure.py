"""Package seams: no import cycles among the repository's modules, no reaching into another module's private names.

Both checks read the source with `ast` (nothing is imported), and each has a test showing it can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "rewards", "data", "launch", "plugins", "recipes")

Modules = dict[str, tuple[str, bool]]  # dotted name -> (source, is a package's __init__)


def read_modules(root: Path = ROOT) -> Modules:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path.read_text(encoding="utf-8"), is_package)
    return modules


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: top level, or inside a top-level if/try/with; not in a def."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ExceptHandler)):
            todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph(modules: Modules) -> dict[str, set[str]]:
    """Module -> the repository modules it imports at module level.

    `from pkg import name` points at the submodule `pkg.name` when there is one, else at `pkg`. The implicit
    import of a module's parent packages is left out: every package's `__init__` would otherwise form a
    cycle with the submodules it imports, which Python handles.
    """
    def known(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph = {}
    for name, (source, is_package) in modules.items():
        targets: set[str | None] = set()
        for node in module_level_imports(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
                continue
            base = node.module or ""
            if node.level:  # relative: counted from this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets.update(known(f"{base}.{alias.name}") or known(base) for alias in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each cycle (strongly connected components of two or more), each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


# What each package may import from the repository; imports flow one way: data <- rewards <- trainer.
MAY_IMPORT = {"data": {"data", "plugins"}, "rewards": {"rewards", "data", "plugins"}}


def layer_breaks(modules: Modules) -> list[str]:
    """Imports, at any depth (a late import inside a function too), against `MAY_IMPORT`."""
    breaks = []
    for name, (source, _) in modules.items():
        allowed = MAY_IMPORT.get(name.split(".")[0])
        if allowed is None:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                continue
            top = {target: target.split(".")[0] for target in targets}
            breaks += [f"{name}:{node.lineno}: imports {target}" for target, package in top.items()
                       if package in PACKAGES and package not in allowed]
    return breaks


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, where: str) -> list[str]:
    """`from x import _name` and `obj._name` on anything but self/cls, as `where:line: code`."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and any(_private(alias.name) for alias in node.names):
            problems.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                problems.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return problems


def test_no_import_cycles():
    cycles = find_cycles(import_graph(read_modules()))
    assert not cycles, "import cycles among: " + "; ".join(", ".join(cycle) for cycle in cycles)


def test_cycle_check_flags_a_cycle_and_reads_relative_imports():
    modules = {
        "pkg": ("from pkg import a  # a package importing its submodule is no cycle", True),
        "pkg.a": ("import os\nfrom pkg.b import helper\n\ndef late():\n    from pkg import c\n", False),
        "pkg.b": ("try:\n    from . import a\nexcept ImportError:\n    pass\nimport pkg.c.d", False),
        "pkg.c": ("", True),
        "pkg.c.d": ("from .. import b", False),
    }
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a", "pkg.c.d"}, "pkg.c": set(),
                     "pkg.c.d": {"pkg.b"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c.d"]]
    modules["pkg.c.d"] = ("import os", False)  # the back edge gone, no cycle is left
    modules["pkg.b"] = ("import pkg.c.d", False)
    assert find_cycles(import_graph(modules)) == []


def test_data_and_rewards_import_only_downstream_packages():
    breaks = layer_breaks(read_modules())
    assert not breaks, "imports against data <- rewards <- trainer:\n" + "\n".join(breaks)


def test_layer_check_flags_an_upstream_import():
    modules = {"data.a": ("def f():\n    from rewards.b import g\n", False), "rewards.b": ("import data.a", False),
               "trainer.c": ("import rewards.b", False)}
    assert layer_breaks(modules) == ["data.a:2: imports rewards.b"]


def test_no_private_names_used_across_modules():
    problems = [problem for name, (source, _) in read_modules().items() for problem in private_uses(source, name)]
    assert not problems, "private names used from outside their owner:\n" + "\n".join(problems)


def test_private_check_flags_imports_and_attributes():
    source = ("from data.sources import _open_rows, load_samples\n"
              "value = sampler._weights + self._weights + cls._seed\n"
              "name = obj.__class__.__name__\n")
    assert private_uses(source, "m") == ["m:1: from data.sources import _open_rows, load_samples",
                                         "m:2: sampler._weights"]
