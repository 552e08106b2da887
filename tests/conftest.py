"""Suite-wide test settings.

`make test` runs two pytest workers on two cores; one intra-op thread per worker avoids
oversubscribing them (two spinning threads per worker made tiny matmuls ~80x slower under load).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test starts on one torch thread, and a test that changes it (``--threads``) cannot leak."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def untrained_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classify ``model.pt`` of the default recipe's model, untrained (seed 0): for the commands that
    take a run's weights (export, compress) where the weights' values do not matter."""
    from visionkit.engine.classify import ClassifyRecipe, build_model, save_classifier

    torch.manual_seed(0)
    recipe = ClassifyRecipe()
    path = tmp_path_factory.mktemp("classifier") / "model.pt"
    return save_classifier(build_model(recipe, num_classes=10), recipe, path)
