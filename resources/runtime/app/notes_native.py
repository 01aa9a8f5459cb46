"""ctypes binding for the bundled native helper `textstats`."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

NAME = "textstats"


def library_file(runtime_root: Path) -> Path:
    """Where the shell's stager puts the library inside a runtime version directory."""
    if sys.platform == "darwin":
        filename = "libtextstats.dylib"
    elif sys.platform == "win32":
        filename = "textstats.dll"
    else:
        filename = "libtextstats.so"
    return runtime_root / NAME / filename


class NativeMissing(Exception):
    """The library is absent, does not load, or does not behave."""


class TextStats:
    """Word, line and character counts computed by the native library."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise NativeMissing(str(path))
        try:
            lib = ctypes.CDLL(str(path))
            lib.textstats_version.argtypes = []
            lib.textstats_version.restype = ctypes.c_int
            for func in (lib.textstats_count_words, lib.textstats_count_lines, lib.textstats_count_chars):
                func.argtypes = [ctypes.c_char_p]
                func.restype = ctypes.c_long
        except (OSError, AttributeError) as exc:
            reason = " ".join(str(exc).split())
            raise NativeMissing(f"{path} (failed to load: {reason})") from None
        self.path = path
        self._lib = lib
        if self.count_words("two words") != 2:
            raise NativeMissing(f"{path} (self-test failed)")

    @property
    def version(self) -> str:
        code = int(self._lib.textstats_version())
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"

    @staticmethod
    def _encode(text: str) -> bytes:
        # The C API takes NUL-terminated strings: a NUL inside the text would cut it short.
        return text.replace("\x00", " ").encode("utf-8", "replace")

    def count_words(self, text: str) -> int:
        return int(self._lib.textstats_count_words(self._encode(text)))

    def count_lines(self, text: str) -> int:
        return int(self._lib.textstats_count_lines(self._encode(text)))

    def count_chars(self, text: str) -> int:
        return int(self._lib.textstats_count_chars(self._encode(text)))
