"""The runner's WebSocket masking (agent_scripts/runner_websocket.py) is RFC 6455's XOR,
whichever way it is computed: tornado's C function when importable, else the standard
library's (a big integer for small payloads, ``translate`` passes for large ones)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent_scripts"))
import runner_websocket  # noqa: E402


def _rfc_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455, section 5.3: octet i of the payload XOR octet i mod 4 of the mask."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("accelerated", [True, False], ids=["tornado", "stdlib"])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 2047, 2048, 2051, 65536, 65539])
def test_masking_is_the_rfc_xor(size: int, accelerated: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    if not accelerated:
        monkeypatch.setattr(runner_websocket, "_c_mask", None)
    elif runner_websocket._c_mask is None:
        pytest.fail("tornado's speedups are not importable in the test environment")
    data, mask = os.urandom(size), os.urandom(4)
    masked = runner_websocket._xor(data, mask)
    assert masked == _rfc_mask(data, mask)
    assert runner_websocket._xor(masked, mask) == data


def test_a_frame_carries_its_payload_masked() -> None:
    payload = os.urandom(70000)
    raw = runner_websocket.frame(0x2, payload)
    assert raw[0] == 0x82 and raw[1] == 0x80 | 127
    length = int.from_bytes(raw[2:10], "big")
    mask, body = raw[10:14], raw[14:]
    assert length == len(payload) == len(body)
    assert _rfc_mask(body, mask) == payload
