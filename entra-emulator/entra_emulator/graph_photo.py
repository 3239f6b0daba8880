"""A user's photo for Graph's /me/photo and /me/photo/$value: the image file the directory names,
its content type and size read from the file itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entra_emulator.directory import User


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    width: int | None
    height: int | None


_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_content_type(data: bytes) -> str | None:
    for signature, content_type in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return content_type
    return None


def image_size(data: bytes, content_type: str) -> tuple[int | None, int | None]:
    """Width and height from the image header (Graph reports them in /photo metadata)."""
    if content_type == "image/png" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if content_type == "image/gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if content_type == "image/jpeg":
        return _jpeg_size(data)
    return None, None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None, None
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2:position + 4], "big")
        # Start-of-frame markers carry the dimensions; C4, C8 and CC are other tables.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            return width, height
        position += 2 + length
    return None, None


def user_photo(user: User) -> Photo | None:
    """The user's photo, or None when there is none (no file, unreadable, not an image)."""
    if user.photo is None:
        return None
    try:
        data = Path(user.photo).read_bytes()
    except OSError:
        return None
    content_type = image_content_type(data)
    if content_type is None:
        return None
    width, height = image_size(data, content_type)
    return Photo(data, content_type, width, height)
