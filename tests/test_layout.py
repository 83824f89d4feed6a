"""The kit's shape, checked on its source: stages import only earlier stages, no import cycle
(lazy imports inside functions count too), and nothing imports the CLI."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The evening's order: a module may import its own stage or an earlier one.
STAGES = ["hackathon.core", "labeling", "hackathon.train", "hackathon.deploy", "hackathon.evaluate",
          "hackathon.judge", "hackathon"]


def modules():
    for pkg in ("hackathon", "labeling"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def stage(module):
    """The index of the longest stage name `module` is in (hackathon.core before hackathon)."""
    return max((len(s), i) for i, s in enumerate(STAGES) if module == s or module.startswith(s + "."))[1]


def imports(path, known):
    """Every kit module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


@pytest.fixture(scope="module")
def graph():
    mods = dict(modules())
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_no_stage_imports_a_later_one_and_nothing_imports_the_cli(graph):
    later = [(m, i) for m, deps in graph.items() for i in deps
             if stage(i) > stage(m) and not (m == "hackathon" or i == "hackathon")]
    assert later == []
    assert [m for m, deps in graph.items() if "hackathon.cli" in deps] == []


def test_no_import_cycle(graph):
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for dep in sorted(graph[m]):
            if not (dep == "hackathon" or m == "hackathon" or graph.get(dep) is None):
                visit(dep)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_the_checker_sees_a_lazy_cycle_and_a_backward_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from hackathon.judge.score import x\n")
    b.write_text("def f():\n    from hackathon.train.loop import y\n")
    known = {"hackathon.judge.score", "hackathon.train.loop"}
    assert imports(a, known) == {"hackathon.judge.score"} and imports(b, known) == {"hackathon.train.loop"}
    assert stage("hackathon.judge.score") > stage("hackathon.train.loop") > stage("labeling.pack")
