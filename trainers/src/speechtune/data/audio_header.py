"""Audio facts from file headers, without decoding: sample rate, channels, frames.

WAV headers are parsed here directly (a few microseconds, and it notices truncated files,
which libsndfile silently shortens); other formats, and WAVs this parser does not
understand, go through soundfile.info.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

# PCM, IEEE float, A-law, mu-law, WAVE_FORMAT_EXTENSIBLE.
_WAV_FORMATS = {1, 3, 6, 7, 0xFFFE}
# 0 and 0xFFFFFFFF mark streamed WAVs whose writer never knew the length.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF}


@dataclasses.dataclass(frozen=True)
class AudioHeader:
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


class AudioHeaders:
    """Headers per unique file, cached: manifests often cut many rows from one file."""

    def __init__(self) -> None:
        self._cache: dict[Path, AudioHeader | str] = {}

    def get(self, path: Path) -> AudioHeader | str:
        """The header, or a message saying why the file is unusable."""
        if path not in self._cache:
            self._cache[path] = read_header(path)
        return self._cache[path]


def read_header(path: Path) -> AudioHeader | str:
    """The header of `path`, or a message: not found, unreadable, corrupt, empty."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return f"audio file not found: {path}"
    except IsADirectoryError:
        return f"audio path is a folder: {path}"
    except OSError as error:
        return f"unreadable audio {path}: {error.strerror or error}"
    parsed = parse_wav(head, size) if head[:4] == b"RIFF" and head[8:12] == b"WAVE" else None
    if parsed is None:
        parsed = _soundfile_header(path)
    if isinstance(parsed, str):
        return f"corrupt audio {path}: {parsed}"
    if parsed.frames <= 0:
        return f"audio has no samples: {path}"
    return parsed


def parse_wav(head: bytes, file_size: int) -> AudioHeader | str | None:
    """A RIFF/WAVE header from the first bytes of the file: the header, a message when the
    file is truncated, or None when soundfile should decide."""
    fmt: tuple[int, int, int, int] | None = None
    position = 12
    while position + 8 <= len(head):
        chunk, size = head[position:position + 4], struct.unpack_from("<I", head, position + 4)[0]
        body = position + 8
        if chunk == b"fmt " and size >= 16 and body + 16 <= len(head):
            fmt = struct.unpack_from("<HHIxxxxH", head, body)  # format, channels, rate, block align
        elif chunk == b"data":
            if fmt is None or size in _UNKNOWN_SIZES:
                return None
            format_tag, channels, rate, block_align = fmt
            if format_tag not in _WAV_FORMATS or not channels or not rate or not block_align:
                return None
            available = file_size - body
            if available < size:
                return f"data chunk holds {available} of {size} bytes (truncated file)"
            return AudioHeader(sample_rate=rate, channels=channels, frames=size // block_align)
        position = body + size + (size & 1)
    return None


def _soundfile_header(path: Path) -> AudioHeader | str:
    import soundfile  # libsndfile; only for formats the WAV parser leaves alone

    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        return f"unreadable: {error}"
    return AudioHeader(int(info.samplerate), int(info.channels), int(info.frames))
