"""A full disk for Django's ``FileSystemStorage``, for the tests that write artifacts.

:func:`fill_disk` swaps the ``os`` module the storage writes through for one whose
files take ``room`` bytes and then fail every write with ``ENOSPC``, as a real full
disk does: what was written stays on disk (Django does not delete it). Only files
whose path contains ``where`` are affected; the rest of the process keeps the real
``os``.
"""

import errno
import os
from types import SimpleNamespace

from django.core.files.storage import filesystem


class _FullFile:
    def __init__(self, real, room: int):
        self._real, self._room = real, room

    def write(self, data) -> int:
        if len(data) > self._room:
            self._real.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)


def fill_disk(monkeypatch, *, where: str = "", room: int = 1024) -> SimpleNamespace:
    """Make the storage's writes under paths containing ``where`` fail with
    ``ENOSPC`` after ``room`` bytes; returns the record of the paths that failed."""
    full_paths: dict[int, str] = {}
    record = SimpleNamespace(failed=[])

    def open_(path, flags, mode=0o777, *args, **kwargs):
        fd = os.open(path, flags, mode, *args, **kwargs)
        if where in str(path):
            full_paths[fd] = str(path)
        return fd

    def fdopen(fd, *args, **kwargs):
        real = os.fdopen(fd, *args, **kwargs)
        if fd in full_paths:
            record.failed.append(full_paths.pop(fd))
            return _FullFile(real, room)
        return real

    fake_os = SimpleNamespace(
        **{name: getattr(os, name) for name in dir(os) if not name.startswith("__")}
    )
    fake_os.open, fake_os.fdopen = open_, fdopen
    monkeypatch.setattr(filesystem, "os", fake_os)
    return record
