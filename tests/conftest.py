"""Fixtures shared by the test files: one torch thread, the tiny generator and its saved folder.

None is autouse: a file that wants one torch thread for all its tests says
``pytestmark = pytest.mark.usefixtures("one_thread")``. A file's own fixture of
the same name (a smaller ``G``, say) takes precedence over these.
"""

import pytest
import torch
from helpers import one_torch_thread, save_tiny_model, tiny_generator


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Tests marked ``gpu`` are skipped, saying why, where there is no CUDA device (CI, most laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the whole module (see helpers.one_torch_thread)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def G():
    """The tiny 64 px generator (seed 0, eval mode, frozen), built once per module."""
    return tiny_generator()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny generator (seed 0) saved in fp32 by save_pretrained, once per module."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))
