"""The package's layering: no import circles, between modules or between top-level packages (a
module-level or function-level import counts), and a top level of at most 12 modules."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stres_jax"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules):
    """The stres_jax modules `path` imports (a name imported from a package counts as its module
    when it is one, else as the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("stres_jax"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stres_jax"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules}


def circles_of(graph):
    circles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            if state.get(other) == "open":
                circles.append(trail[trail.index(other):] + [other])
            elif other not in state:
                visit(other, trail + [other])
        state[name] = "done"
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return circles


def module_graph():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, paths) - {name} for name, path in paths.items()}
    # a package's face (__init__) that only hands names on is left out, as it is on the plan
    faces = {name for name, path in paths.items() if path.name == "__init__.py"}
    return {name: edges - faces for name, edges in graph.items() if name not in faces}


def test_no_import_circles():
    circles = circles_of(module_graph())
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_upward_imports():
    """Between the top-level packages and modules too (e.g. `eval/__main__` importing `cli/`, which
    imports `eval/`): each stands above everything it imports."""
    top = {}
    for name, edges in module_graph().items():
        unit = ".".join(name.split(".")[:2])
        top.setdefault(unit, set()).update(".".join(e.split(".")[:2]) for e in edges)
    circles = circles_of({unit: edges - {unit} for unit, edges in top.items()})
    assert not circles, "upward imports: " + "; ".join(" -> ".join(c) for c in circles)


def test_top_level_holds_at_most_twelve_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
