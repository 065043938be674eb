"""Put tests/rollout on sys.path so `replay_backend:ReplayGenerator` names the test-only backend."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
