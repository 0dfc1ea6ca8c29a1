"""Shared test set-up."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Real forwards on one thread: the tensors are tiny (thread start-up costs more than the
    op) and the suite shares two cores. torch is left unimported where no test imported it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
