"""The package's layering, read from every import statement (module level and inside functions):
no import cycle between modules, packages import only lower layers, and nothing but the CLI imports
the CLI (docs/architecture.md)."""
import ast
import pathlib

import pytest

import elit

SRC = pathlib.Path(elit.__file__).parent
# Lower layers first; a package may import its own modules and those of lower layers only. The root
# package (elit/__init__.py, the lazy public API) sits above all of them.
LAYERS = [
    {"errors"},
    {"_io", "_lock", "_threads", "_precision", "_distributed"},
    {"viz", "vae", "_output"},
    {"model", "video"},
    {"cost", "flow", "data", "interop", "hub"},
    {"sampling"},
    {"train"},
    {"eval", "serve"},
    {"cli"},
    {"__main__"},     # `python -m elit`
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_names() -> dict[str, pathlib.Path]:
    return {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in SRC.rglob("*.py")}


def imports_of(path: pathlib.Path, modules) -> set[str]:
    """Every elit module `path` imports, wherever the import statement stands."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("elit"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            # `from pkg import submodule` needs the submodule; any other name needs pkg itself
            deps.update(subs if len(subs) == len(node.names) else subs | {node.module})
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("elit"))
    return {d for d in deps if d in modules}


@pytest.fixture(scope="module")
def graph():
    modules = module_names()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_between_modules(graph):
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [n, d] if d in stack else [n, d]))
            if d not in state:
                visit(d, stack + [n])
        state[n] = "done"
    for n in sorted(graph):
        if n not in state:
            visit(n, [])


def test_every_package_has_a_layer(graph):
    assert {package(m) for m in graph} - {""} <= set(RANK), "add the new package to LAYERS (and the docs)"


def test_packages_import_only_lower_layers(graph):
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if package(m) and package(d) and package(m) != package(d)
                   and RANK[package(d)] >= RANK[package(m)])
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_cli_imports_it(graph):
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if package(d) == "cli" and package(m) not in ("cli", "__main__"))
    assert not wrong, "\n".join(wrong)


def test_latent_positions_are_decided_in_one_module():
    """Only elit/model/positions.py compares a latent_pos value; adapters get a LatentPositions value
    (coordinates or token indices) through one hook, Backbone.latent_rope, and map it."""
    deciders = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                    (isinstance(n, ast.Attribute) and n.attr == "latent_pos") or (isinstance(n, ast.Name) and n.id == "latent_pos")
                    for side in (node.left, *node.comparators) for n in ast.walk(side)):
                deciders.add(str(path.relative_to(SRC)))
    assert deciders <= {"model/positions.py"}, deciders
    src = (SRC / "model" / "positions.py").read_text()
    assert all(f'"{kind}"' in src for kind in ("rope", "tokens", "learned", "none"))


def test_the_latent_position_defaults():
    """From scratch: RoPE backbones rotate latents by (slot, group); others get a learned table.
    Pretrained (make_elastic, elit finetune): latents sit on their tokens where the adapter can."""
    assert elit.create_model("ELIT-DiT-S/2").config.interface.latent_pos == "rope"
    assert elit.create_model("ELIT-U-ViT-original-S/2").config.interface.latent_pos == "learned"
    from elit.model.positions import default_latent_pos
    assert default_latent_pos(uses_rope=False, token_positions=True, pretrained=True) == "tokens"
    assert default_latent_pos(uses_rope=False, token_positions=False, pretrained=True) == "learned"


def test_conditionality_is_asked_of_the_config():
    """Whether a model is class-, text- or un-conditioned is ModelConfig.condition (and .conditional):
    outside elit/model nothing tests `.num_classes` against 0 or reads an adapter's condition_kind."""
    wrong = []
    for path in SRC.rglob("*.py"):
        rel = str(path.relative_to(SRC))
        if rel.startswith("model/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "condition_kind":
                wrong.append(f"{rel}:{node.lineno} reads condition_kind")
            if isinstance(node, ast.Compare) and len(node.comparators) == 1 and any(
                    isinstance(n, ast.Attribute) and n.attr == "num_classes"
                                                     for n in (node.left, *node.comparators)) \
                    and any(isinstance(n, ast.Constant) and n.value == 0 for n in (node.left, *node.comparators)):
                wrong.append(f"{rel}:{node.lineno} compares num_classes with 0")
    assert not wrong, "\n".join(wrong)
