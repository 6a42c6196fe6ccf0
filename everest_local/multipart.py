"""A streaming reader of ``multipart/form-data`` that keeps the first file part.

Everest clients upload with different field names (``file``, ``sendfile``), so the upload
endpoint takes the first part that has a ``filename``, whatever its name. The body is fed
chunk by chunk as it arrives and the file part goes straight to a sink (a file on disk), so
an upload of any size costs a few buffers of memory, not its size.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from typing import BinaryIO

MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data; the message says how."""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; MultipartError if none."""
    msg = Message()
    msg["content-type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        raise MultipartError("send the file as multipart/form-data")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise MultipartError("the multipart Content-Type has no usable boundary")
    return boundary.encode("latin-1")


class FirstFilePart:
    """Feed body chunks with :meth:`feed`; :meth:`close` returns the file part's name.

    ``open_sink(filename)`` is called once, when the first file part's headers have been
    read, and returns a binary file to write its content to. Parts without a filename
    (plain form fields) and every part after the first file are skipped.
    """

    def __init__(self, boundary: bytes, open_sink: Callable[[str], BinaryIO]):
        self._delim = b"\r\n--" + boundary
        self._first = b"--" + boundary
        self._open_sink = open_sink
        self._buf = b""
        self._state = "preamble"
        self._sink: BinaryIO | None = None
        self._capturing = False
        self.filename: str | None = None
        self.length = 0

    def feed(self, data: bytes) -> None:
        """Consume the next chunk of the body. Raises MultipartError on malformed input."""
        self._buf += data
        while self._step():
            pass

    def close(self) -> str | None:
        """End of body: the stored file's name, or None if there was no file part."""
        if self._state != "done":
            raise MultipartError("the multipart body ended early (no closing boundary)")
        return self.filename

    # -- the state machine ------------------------------------------------------------------

    def _step(self) -> bool:
        """Advance as far as the buffer allows; True if another step may make progress."""
        if self._state == "preamble":
            i = self._buf.find(self._first)
            if i < 0:
                self._buf = self._buf[-len(self._first):]
                return False
            self._buf = self._buf[i + len(self._first):]
            self._state = "after_delimiter"
            return True
        if self._state == "after_delimiter":
            if len(self._buf) < 2:
                return False
            if self._buf.startswith(b"--"):
                self._state, self._buf = "done", b""
                return False
            if not self._buf.startswith(b"\r\n"):
                raise MultipartError("malformed multipart boundary line")
            self._buf = self._buf[2:]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    raise MultipartError("multipart part headers are too long")
                return False
            self._start_part(self._buf[:end].decode("utf-8", errors="replace"))
            self._buf = self._buf[end + 4:]
            self._state = "body"
            return True
        if self._state == "body":
            i = self._buf.find(self._delim)
            if i < 0:
                keep = len(self._delim) - 1
                if len(self._buf) > keep:
                    self._write(self._buf[:-keep])
                    self._buf = self._buf[-keep:]
                return False
            self._write(self._buf[:i])
            self._buf = self._buf[i + len(self._delim):]
            if self._capturing:
                self._capturing = False
            self._state = "after_delimiter"
            return True
        self._buf = b""  # done: ignore an epilogue
        return False

    def _start_part(self, header_text: str) -> None:
        msg = Message()
        for line in header_text.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                msg[name.strip()] = value.strip()
        filename = msg.get_filename() if msg.get("content-disposition") else None
        if filename and self.filename is None:  # filename="" is an empty file input
            self.filename = filename
            self._sink = self._open_sink(filename)
            self._capturing = True

    def _write(self, data: bytes) -> None:
        if self._capturing and data and self._sink is not None:
            self._sink.write(data)
            self.length += len(data)
