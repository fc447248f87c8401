"""``verify(..., methods=...)``: complete methods given for one call replace the
registry's of the same name for that call only (the mechanism of ``verify --ray``; no
global is changed)."""

from __future__ import annotations

import pytest

from verifier.complete.methods import METHODS
from verifier.errors import VerifierInputError
from verifier.spec.model import Spec
from verifier.verify import method_registry, verify

from cluster_nets import above, mlp_with_top

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Counting:
    """The registry's method ``name``, counting the regions it decides."""

    def __init__(self, name: str):
        self.base, self.calls = METHODS[name], 0
        self.name, self.options = name, self.base.options

    def supports(self, graph):
        return self.base.supports(graph)

    def decide(self, *args):
        self.calls += 1
        return self.base.decide(*args)


@pytest.fixture(scope="module")
def relu_net(tmp_path_factory):
    """3 inputs, 12 + 12 ReLUs (the distributed tests' net: "y ≥ top + 0.05" is unsat and
    needs ReLU splitting)."""
    return mlp_with_top(tmp_path_factory, 2, (3, 12, 12, 1))


def test_a_given_method_decides_for_this_call_only(relu_net):
    model, top = relu_net
    spec = Spec([above(top, 0.05, 3)], 3, 1)
    before = dict(METHODS)
    counting = Counting("relu-split")
    result = verify(model, spec, domain="relu-split", attack=False, timeout=60, methods={"relu-split": counting})
    assert result.status == "unsat" and counting.calls == 1
    assert METHODS == before  # the registry is not changed, not even for the call
    assert verify(model, spec, domain="relu-split", attack=False, timeout=60).status == "unsat"
    assert counting.calls == 1  # a later call without methods uses the registry's own


def test_method_registry_overlays_the_registry():
    counting = Counting("input-split")
    registry = method_registry({"input-split": counting})
    assert method_registry(None) is METHODS and method_registry({}) is METHODS
    assert registry["input-split"] is counting and METHODS["input-split"] is not counting
    assert all(registry[name] is METHODS[name] for name in METHODS if name not in ("input-split", "auto"))


@pytest.mark.parametrize("bad", [["relu-split"], {"relu-split": object()}, {1: METHODS["milp"]}])
def test_methods_that_are_not_complete_methods_are_refused(relu_net, bad):
    model, top = relu_net
    with pytest.raises(VerifierInputError, match="methods must map method names to complete methods"):
        verify(model, Spec([above(top, 0.05, 3)], 3, 1), methods=bad)
