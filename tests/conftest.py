import os
import sys

# Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter. It must be on before the first
# kernel module is imported (the decorator reads it), hence here, before any test module imports backbones.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# With pytest-xdist every worker gets one thread: the workers already use all cores.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
