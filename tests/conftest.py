"Shared pytest fixtures: paths to the bundled real sample and the shared pack, CPU thread settings."
from pathlib import Path
import os
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    "Skip `@pytest.mark.gpu` tests when no CUDA device is present (never fail CI for lack of a GPU)."
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir():
    return SAMPLE


@pytest.fixture(scope="session")
def shared_dir():
    if not (SHARED / "pdb_chains" / "chain_set.jsonl.gz").exists():
        pytest.skip("shared data pack not present next to the checkout")
    return SHARED
