"""The package's layout is its architecture: imports only go down the layers, nothing imports in a circle, and the
networks, their loaders and the sampler import no video library."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower layers know nothing of higher ones: a module may import its own layer and the ones below.
LAYERS = {"app": 6, "io": 0, "models": 1, "poses": 1, "weights": 2, "synthetic": 2, "sampling": 3, "training": 4,
          "eval": 5}
# The metrics are pure functions of two videos (torch only): training's validation uses them too.
MODULE_LAYERS = {"aa.eval.metrics": 1}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every aa module -> the aa modules it imports, at module level or inside functions."""
    modules = {module_name(p): p for p in (ROOT / "aa").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def layer(module: str) -> int | None:
    if module in MODULE_LAYERS:
        return MODULE_LAYERS[module]
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    """No two aa modules import each other, directly or through others (package __init__ files included)."""
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted a -> b -> c -> a is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_only_go_down_the_layers():
    """io < models, poses < weights, synthetic < sampling < training < eval: no module imports a higher layer."""
    upward = [(src, dst) for src, dsts in import_graph().items() for dst in dsts
              if layer(src) is not None and layer(dst) is not None and layer(dst) > layer(src)]
    assert upward == []


def test_networks_loaders_and_sampler_import_without_pyav():
    """With PyAV unimportable, the networks, the weight loaders and the sampler still import and a model builds."""
    code = ("import sys; sys.modules['av'] = None\n"
            "import aa.models.bundle, aa.weights, aa.sampling.pipeline, aa.sampling.load\n"
            "from aa.models import config\n"
            "aa.models.bundle.Models.build(config.tiny())\n"
            "assert 'av' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
