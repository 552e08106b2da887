"""Suite-wide test settings.

`make test` runs two pytest workers on two cores; one intra-op thread per worker avoids
oversubscribing them (two spinning threads per worker made tiny matmuls ~80x slower under load).
"""

from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test starts on one torch thread, and a test that changes it (``--threads``) cannot leak."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
