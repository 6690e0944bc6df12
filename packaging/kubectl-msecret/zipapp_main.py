"""``kubectl-msecret`` as a single file: the ``__main__`` of the zip application that ``make dist`` builds.

The archive holds ``managed_secrets.cli``, ``managed_secrets.names`` and every dependency (``kubernetes``,
``pyyaml`` and theirs) as pure Python. Python can import straight from it, but it cannot write byte code there, so
every run would compile the whole Kubernetes client again (seconds). So the first run of a build unpacks the
archive into ``$KUBECTL_MSECRET_CACHE``, else ``$XDG_CACHE_HOME/kubectl-msecret``, else
``~/.cache/kubectl-msecret``, in a directory named after the build (unpacked beside it, then renamed, so a
half-written copy is never used and two first runs at once are harmless); later runs import from there. Copies
of other builds are removed. ``KUBECTL_MSECRET_CACHE=`` (empty), or a cache that cannot be written, runs from
the archive itself.

hack/dist.py replaces ``BUILD_ID`` with a digest of the archive's contents.
"""

import os
import sys

BUILD_ID = "dev"
MIN_PYTHON = (3, 11)
# A leftover unpacking directory of a run that was killed is removed once it is this old (seconds).
STALE_UNPACK = 3600


def _cache_root():  # -> str | None (no annotations: this module must load on any Python 3 to say what it needs)
    explicit = os.environ.get("KUBECTL_MSECRET_CACHE")
    if explicit is not None:
        return explicit or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kubectl-msecret")


def _remove_other_builds(root, keep, shutil, time):
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name == keep or not os.path.isdir(path):
            continue
        if name.startswith(".") and time.time() - os.stat(path).st_mtime < STALE_UNPACK:
            continue  # another run may be unpacking right now
        shutil.rmtree(path, ignore_errors=True)


def _unpacked(archive, root):  # -> str | None
    import shutil
    import tempfile
    import time
    import zipfile

    target = os.path.join(root, BUILD_ID)
    if os.path.isfile(os.path.join(target, ".complete")):
        return target
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        work = tempfile.mkdtemp(prefix="." + BUILD_ID + ".", dir=root)
        with zipfile.ZipFile(archive) as z:
            z.extractall(work, [n for n in z.namelist() if n != "__main__.py"])
        open(os.path.join(work, ".complete"), "w").close()
        try:
            os.rename(work, target)
        except OSError:  # another first run finished before this one
            shutil.rmtree(work, ignore_errors=True)
            if not os.path.isfile(os.path.join(target, ".complete")):
                return None
        _remove_other_builds(root, BUILD_ID, shutil, time)
    except OSError:
        return None
    return target


def run():
    if sys.version_info < MIN_PYTHON:
        wanted = ".".join(str(p) for p in MIN_PYTHON)
        found = ".".join(str(p) for p in sys.version_info[:3])
        sys.exit(f"kubectl-msecret needs Python {wanted} or newer; {sys.executable} is {found}")
    archive = os.path.dirname(os.path.abspath(__file__))
    root = _cache_root()
    unpacked = _unpacked(archive, root) if root and os.path.isfile(archive) else None
    if unpacked:
        # Import from the unpacked copy instead of the archive (sys.path[0] is the archive when it runs).
        sys.path[:] = [unpacked] + [p for p in sys.path if os.path.abspath(p or ".") != archive]
    from managed_secrets.cli.main import main

    sys.exit(main())


if __name__ == "__main__":
    run()
