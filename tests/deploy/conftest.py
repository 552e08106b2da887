"""Tests of visionkit.deploy use the network rounding bounds of tests/models (network_error.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
