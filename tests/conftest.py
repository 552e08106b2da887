"""Suite-wide test settings.

`make test` runs two pytest workers on two cores; one intra-op thread per worker avoids
oversubscribing them (two spinning threads per worker made tiny matmuls ~80x slower under load).
"""

import torch

torch.set_num_threads(1)
