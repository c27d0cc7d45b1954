"""Just enough of the PostgreSQL wire protocol for the fault proxy to read it."""

from __future__ import annotations

import asyncio
import struct

from .common import ServiceError

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
SSL_REQUEST = struct.pack("!ii", 8, SSL_REQUEST_CODE)


class FrameParser:
    """Split a byte stream into protocol frames (type byte + int32 length)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Add ``data``; return the complete ``(type, body)`` frames it finished."""
        self._buf += data
        frames: list[tuple[bytes, bytes]] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 5:
            (length,) = struct.unpack_from("!i", buf, pos + 1)
            end = pos + 1 + length
            if length < 4 or len(buf) < end:
                break
            frames.append((bytes(buf[pos : pos + 1]), bytes(buf[pos + 5 : end])))
            pos = end
        del buf[:pos]
        return frames


async def read_initial_packet(reader: asyncio.StreamReader) -> bytes:
    """Read an untyped startup-phase packet: int32 length (itself included) + body."""
    header = await reader.readexactly(8)
    (length,) = struct.unpack("!i", header[:4])
    if not 8 <= length <= 10_000:
        raise ServiceError(f"bad startup packet length {length}")
    return header + await reader.readexactly(length - 8)


def packet_code(packet: bytes) -> int:
    """Return the request code of a startup-phase packet (SSLRequest, cancel...)."""
    code: int = struct.unpack("!i", packet[4:8])[0]
    return code
