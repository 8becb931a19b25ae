"""The package's import structure: imports point down, and no subpackages import each other in
a circle. Read from the source with ``ast`` (nothing is imported), including imports inside
functions, so a lazy import cannot hide an upward one."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "erasus"
#: the ground: these import nothing of Erasus above them
GROUND = {"exceptions": set(), "utils": {"exceptions"}, "losses": {"exceptions", "utils"},
          "models": {"exceptions", "utils", "losses"}}


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else ""


def _imports(path: Path):
    """The top-level Erasus subpackages ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    pkg_parts = list(path.relative_to(SRC).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = pkg_parts[:len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    yield parts[0]
                else:  # "from .. import x": x is a subpackage of erasus
                    yield from (a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == "erasus":
                parts = node.module.split(".")
                yield parts[1] if len(parts) > 1 else ""
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "erasus":
                    yield parts[1] if len(parts) > 1 else ""


def _graph():
    g = {}
    for path in SRC.rglob("*.py"):
        src = _package_of(path)
        if not src:
            continue
        for dst in _imports(path):
            if dst and dst != src:
                g.setdefault(src, {}).setdefault(dst, set()).add(str(path.relative_to(SRC)))
    return g


def test_the_ground_floor_imports_nothing_above_it():
    g = _graph()
    upward = {f"{src} -> {dst}: {sorted(files)}" for src, allowed in GROUND.items()
              for dst, files in g.get(src, {}).items() if dst not in allowed}
    assert not upward, upward


def test_no_import_circles_between_subpackages():
    g = {k: set(v) for k, v in _graph().items()}
    state, stack, circles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in g.get(n, ()):
            if state.get(m) == "open":
                circles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in list(g):
        if n not in state:
            visit(n)
    assert not circles, circles
