"""torch.compile of elastic models: the whole forward traces as one graph (no graph breaks), and
compile_blocks serves every budget and batch size from a bounded set of graphs with eager's outputs.

Dynamo's "eager" backend traces exactly what inductor would compile but skips code generation, so
these checks take seconds; the compile time and speed of inductor are in benchmarks/compile_cpu.py.
"""
import pytest
import torch
import torch._dynamo

import elit
from elit.model import compile_blocks


def _model():
    torch.manual_seed(0)
    model = elit.create_model("ELIT-DiT-S/2", input_size=16, num_classes=10, hidden_size=64, depth=6,
                              num_heads=2).eval()
    with torch.no_grad():    # zero-init output layers would make every output 0 and hide differences
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _inputs(batch):
    g = torch.Generator().manual_seed(batch)
    return (torch.randn(batch, 4, 16, 16, generator=g), torch.rand(batch, generator=g),
            torch.randint(0, 10, (batch,), generator=g))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _graphs():
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_whole_forward_traces_without_graph_breaks_at_every_budget():
    model = _model()
    compiled = torch.compile(model, backend="eager", fullgraph=True)   # fullgraph: a graph break raises
    x, t, y = _inputs(3)
    with torch.no_grad():
        for budget in [None, *model.budgets]:
            torch.testing.assert_close(compiled(x, t, y, budget=budget), model(x, t, y, budget=budget),
                                       rtol=0, atol=1e-5)


def test_compile_blocks_graphs_do_not_grow_with_budgets_or_batch_sizes():
    model = _model()
    names = list(model.state_dict())
    eager = {(b, n): model(*_inputs(n), budget=b).detach() for n in (2, 5) for b in model.budgets}
    compile_blocks(model, backend="eager")
    assert list(model.state_dict()) == names          # compiled in place: checkpoints are unchanged
    assert model.compiled_modules == ["DiTBlock"] * 6 + ["Read", "Write"]
    with torch.no_grad():
        for budget in model.budgets:
            out = model(*_inputs(2), budget=budget)
            torch.testing.assert_close(out, eager[(budget, 2)], rtol=0, atol=1e-5)
        after_budgets = _graphs()
        for budget in model.budgets:                   # a new batch size (CFG doubles it): no new graph
            torch.testing.assert_close(model(*_inputs(5), budget=budget), eager[(budget, 5)], rtol=0, atol=1e-5)
    assert _graphs() == after_budgets
    # A handful per module kind (static first call, strides, size-1 specialisation), never per budget.
    assert after_budgets <= 12, after_budgets
