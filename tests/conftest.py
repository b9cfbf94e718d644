"""Shared fixtures.  Builders and read helpers for the input readers live in ``warcgen.py``."""

from __future__ import annotations

import pytest

BIG_PAGE_BYTES = 50 * 1024 * 1024


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (training tests: ``pytestmark = usefixtures(...)``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def big_page() -> bytes:
    """A 50 MiB HTML page (built once per session)."""
    head = b"<!DOCTYPE html><html><head><title>big</title></head><body>"
    tail = b"</body></html>"
    para = b"<p>" + "Gro\u00dfe Seite mit sehr viel Text, immer wieder. ".encode() * 20 + b"</p>\n"
    fill = BIG_PAGE_BYTES - len(head) - len(tail)
    body = para * (fill // len(para))
    body += b"x" * (fill - len(body))
    data = head + body + tail
    assert len(data) == BIG_PAGE_BYTES
    return data


@pytest.fixture(scope="session")
def big_page_warc(tmp_path_factory, big_page):
    """gzip-per-record WARC: a small page (1), the 50 MiB page (2), a small page (3)."""
    import warcgen

    path = tmp_path_factory.mktemp("big") / "big.warc.gz"
    warcgen.write(path, [warcgen.response(1), warcgen.response(2, big_page), warcgen.response(3)])
    return path
