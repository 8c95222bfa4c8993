import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `import helpers`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def tiny_model():
    from helpers import build_model

    return build_model()


@pytest.fixture()
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared CPU they only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_EXIT_STATUS = {"code": None}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with the session's exit status as soon as pytest is done. A full run (native
    extension, compiled passes, notebook kernels, browser driver) once died with SIGSEGV during
    interpreter teardown, after every result was reported; the crash is not diagnosed yet (see
    the closing note of that round). GEOMLENS_TEST_NORMAL_EXIT=1 keeps the normal teardown."""
    if _EXIT_STATUS["code"] is None or os.environ.get("GEOMLENS_TEST_NORMAL_EXIT") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["code"])
