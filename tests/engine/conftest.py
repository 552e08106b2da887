"""Engine tests train small models: one intra-op thread avoids oversubscribing the shared CPU cores
(under load, two spinning threads made a tiny matmul ~80x slower)."""

import torch

torch.set_num_threads(1)
