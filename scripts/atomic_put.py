"""Atomic file writes for the test-data fetch scripts.

`put(path, data)` writes `data` beside `path` under a temporary name, syncs
it and renames it into place, so `path` is either absent or complete: an
interrupted fetch leaves at worst a stray `.NAME.*` temporary file, which no
reader looks at.
"""
import os
import tempfile


def put(path, data):
    folder = os.path.dirname(path) or "."
    fd, part = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(part, 0o644)
        os.replace(part, path)
    except BaseException:
        os.unlink(part)
        raise
