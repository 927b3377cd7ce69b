"""Fixtures of the llm tests."""

from __future__ import annotations

import pytest

from attnprune.llm.capture import layer_inputs, run_layer
from attnprune.llm.objectives import LayerWindow


@pytest.fixture(scope="session")
def make_window():
    """``make_window(model, ids, index=1)``: decoder layer ``index``'s :class:`LayerWindow` on the
    hidden states the dense model feeds it for ``ids``."""

    def make(model, ids, index: int = 1) -> LayerWindow:
        hidden, kwargs = layer_inputs(model, ids, batch_size=2)
        for i in range(index):
            hidden = run_layer(model, i, hidden, kwargs, batch_size=2)
        return LayerWindow.of(model, index, hidden, kwargs)

    return make
