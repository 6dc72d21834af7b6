"""A full disk for the tests: writes to one file fail with ENOSPC, as the OS fails them.

`FullDisk(name, room, skip)` patches the built-in open(): a file opened for writing whose
name matches `name` (a file name or a glob pattern), or the temporary name atomic_path gives
it (`.<name>.XXXX.tmp`), accepts `room` bytes, then every write raises OSError(ENOSPC) after
writing what still fits. The first `skip` such files are left alone (epoch 1's checkpoint,
say). `on_hit()` is called when the fault starts, before anything is written. Everything the
project writes goes through Python's file write (numpy, scipy, torch.save, json, csv, PIL).

A child process gets the same fault from child_env(): FULL_DISK=name:room:skip, and this
folder's `full_disk_site` on PYTHONPATH (its sitecustomize installs it).
"""
import builtins
import errno
import fnmatch
import io
import os

REAL_OPEN = builtins.open
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "full_disk_site")


class FullDisk:
    def __init__(self, name, room=0, skip=0, on_hit=None):
        self.name, self.room, self.skip, self.on_hit = name, room, skip, on_hit
        self.hits = []            # the files the fault met

    def matches(self, file):
        base = os.path.basename(os.fspath(file))
        return fnmatch.fnmatchcase(base, self.name) or fnmatch.fnmatchcase(base, f".{self.name}.*.tmp")

    def open(self, file, mode="r", *args, **kwargs):
        writing = isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")
        if not writing or not self.matches(file):
            return REAL_OPEN(file, mode, *args, **kwargs)
        if self.skip:
            self.skip -= 1
            return REAL_OPEN(file, mode, *args, **kwargs)
        if not self.hits and self.on_hit is not None:
            self.on_hit()
        self.hits.append(os.fspath(file))
        return Filling(REAL_OPEN(file, mode, *args, **kwargs), self)

    def install(self, monkeypatch=None):
        use_open(self.open, monkeypatch)
        return self

    def child_env(self):
        """The environment variables that give a child process the same full disk."""
        path = [SITE_DIR, os.path.dirname(SITE_DIR)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        return {"PYTHONPATH": os.pathsep.join(path), "FULL_DISK": f"{self.name}:{self.room}:{self.skip}"}


class Filling:
    """A file on a disk with `disk.room` bytes left."""

    def __init__(self, f, disk):
        self._f, self._disk = f, disk

    def write(self, data):
        data = memoryview(data).cast("B") if not isinstance(data, str) else data
        if len(data) > self._disk.room:
            fits = self._disk.room
            if fits:
                self._f.write(data[:fits])
            self._disk.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.room -= len(data)
        return self._f.write(data)

    def fileno(self):             # so that nothing writes around write() (PIL would)
        raise io.UnsupportedOperation("fileno")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def use_open(function, monkeypatch=None):
    for module in (builtins, io):
        if monkeypatch is None:
            module.open = function
        else:
            monkeypatch.setattr(module, "open", function)


def room_again(monkeypatch=None):
    """The disk has room again: the built-in open() as it was."""
    use_open(REAL_OPEN, monkeypatch)


def install_from_env():
    spec = os.environ.get("FULL_DISK")
    if spec:
        name, room, skip = spec.rsplit(":", 2)
        FullDisk(name, int(room), int(skip)).install()
