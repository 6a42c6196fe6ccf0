"""The streaming multipart reader behind uploads: any chunking, any field name."""

from __future__ import annotations

import io

import pytest

from everest_local.multipart import FirstFilePart, MultipartError, boundary_of

B = b"XyZ-boundary"


def _body(*parts: tuple[str, str | None, bytes], preamble: bytes = b"") -> bytes:
    out = preamble
    for name, filename, content in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None
                                              else "")
        out += (b"--" + B + b"\r\nContent-Disposition: " + disp.encode() +
                b"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
    return out + b"--" + B + b"--\r\n"


def _parse(body: bytes, chunk: int) -> tuple[str | None, bytes]:
    sinks: list[io.BytesIO] = []

    def open_sink(name: str) -> io.BytesIO:
        sinks.append(io.BytesIO())
        sinks[-1].close = lambda: None  # keep the content readable
        return sinks[-1]

    parser = FirstFilePart(B, open_sink)
    for i in range(0, len(body), chunk):
        parser.feed(body[i:i + chunk])
    name = parser.close()
    return name, (sinks[0].getvalue() if sinks else b"")


TRICKY = b"line\r\n--XyZ-boundar\r\n--XyZ\r\n" + bytes(range(256)) * 3 + b"\r\n-"


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
def test_first_file_part_whatever_the_chunking(chunk):
    body = _body(("comment", None, b"a form field"), ("sendfile", "data.bin", TRICKY),
                 ("file", "second.txt", b"ignored"), preamble=b"preamble\r\n")
    assert _parse(body, chunk) == ("data.bin", TRICKY)


def test_empty_file_and_no_file():
    assert _parse(_body(("file", "empty.txt", b"")), 3) == ("empty.txt", b"")
    assert _parse(_body(("a", None, b"x"), ("f", "", b"")), 5) == (None, b"")


def test_truncated_and_malformed_bodies():
    body = _body(("file", "a.txt", b"abc"))
    with pytest.raises(MultipartError, match="ended early"):
        _parse(body[:-10], 4)
    with pytest.raises(MultipartError, match="boundary line"):
        _parse(b"--" + B + b"XX", 100)
    with pytest.raises(MultipartError, match="too long"):
        _parse(b"--" + B + b"\r\n" + b"h" * 20000, 1000)


@pytest.mark.parametrize("ctype, ok", [
    ('multipart/form-data; boundary="XyZ-boundary"', True),
    ("multipart/form-data; boundary=XyZ-boundary", True),
    ("application/json", False),
    ("multipart/form-data", False),
])
def test_boundary_of(ctype, ok):
    if ok:
        assert boundary_of(ctype) == B
    else:
        with pytest.raises(MultipartError):
            boundary_of(ctype)
