"""The ``authorized_keys`` edits of the ``sshKey.hosts`` rotation, as pure functions on the file's bytes.

The operator owns only the lines it wrote, and knows them by a tag in their comment::

    ssh-ed25519 AAAAC3Nz... managedsecrets.io/<namespace>/<name>/<version-id> [the spec's comment]

Every other line (the admin's key, other people's keys, comments, options, blank lines) is kept byte for byte,
in its place and with its line ending. A function returns ``None`` when the file needs no change, so a repeated
step writes nothing.

- ``install``: the line of one version holds this key (added at the end, or an older line of the same version
  replaced: a first value that was made again after a crash).
- ``keep_only``: this ManagedSecret's lines are exactly the given versions' (the others removed, a missing one
  added), which is what ``finish`` leaves: the new ACSCurrent and ACSPrevious keys, nothing older.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TAG_PREFIX", "KeyLine", "install", "keep_only", "tag", "versions_in"]

TAG_PREFIX = "managedsecrets.io/"


def tag(secret_id: str, version_id: str) -> str:
    """``managedsecrets.io/<namespace>/<name>/<version-id>``; ``secret_id`` is ``namespace/name``."""
    return f"{TAG_PREFIX}{secret_id}/{version_id}"


@dataclass(frozen=True)
class KeyLine:
    """One line the operator writes: the key (``<type> <base64>``) and the spec's comment."""

    key: str
    comment: str = ""

    def render(self, secret_id: str, version_id: str) -> bytes:
        parts = [self.key, tag(secret_id, version_id)]
        if self.comment:
            parts.append(self.comment)
        return " ".join(parts).encode("utf-8")


def _ours(line: bytes, secret_id: str) -> tuple[str, str] | None:
    """``(version_id, key)`` when ``line`` is one the operator wrote for ``secret_id``."""
    fields = line.split()
    if len(fields) < 3:
        return None
    try:
        marker = fields[2].decode("ascii")
        key = b" ".join(fields[:2]).decode("ascii")
    except UnicodeDecodeError:
        return None
    prefix = f"{TAG_PREFIX}{secret_id}/"
    if not marker.startswith(prefix):
        return None
    version_id = marker[len(prefix) :]
    if not version_id or "/" in version_id:
        return None
    return version_id, key


def _lines(text: bytes | None) -> list[bytes]:
    """The file's lines, each with its own line ending (the last one may have none)."""
    return (text or b"").splitlines(keepends=True)


def _join(lines: list[bytes]) -> bytes:
    out = bytearray()
    for line in lines:
        if out and not out.endswith(b"\n"):
            out += b"\n"
        out += line
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return bytes(out)


def _ending(line: bytes) -> bytes:
    return line[len(line.rstrip(b"\r\n")) :] or b"\n"


def versions_in(text: bytes | None, secret_id: str) -> dict[str, str]:
    """The versions of ``secret_id`` the file holds, and their keys (the last line of a version wins)."""
    found: dict[str, str] = {}
    for line in _lines(text):
        mine = _ours(line, secret_id)
        if mine is not None:
            found[mine[0]] = mine[1]
    return found


def keep_only(text: bytes | None, secret_id: str, keep: Mapping[str, KeyLine]) -> bytes | None:
    """The file with exactly the ``keep`` versions of ``secret_id`` (``None``: it already has exactly them)."""
    out: list[bytes] = []
    placed: set[str] = set()
    changed = False
    for line in _lines(text):
        mine = _ours(line, secret_id)
        if mine is None:
            out.append(line)
            continue
        version_id, key = mine
        wanted = keep.get(version_id)
        if wanted is None or version_id in placed:
            changed = True  # an older version, or a second line of one
            continue
        placed.add(version_id)
        rendered = wanted.render(secret_id, version_id)
        if key != wanted.key or line.rstrip(b"\r\n") != rendered:
            out.append(rendered + _ending(line))
            changed = True
        else:
            out.append(line)
    for version_id, wanted in keep.items():
        if version_id not in placed:
            out.append(wanted.render(secret_id, version_id) + b"\n")
            changed = True
    return _join(out) if changed else None


def install(text: bytes | None, secret_id: str, version_id: str, line: KeyLine) -> bytes | None:
    """The file with ``version_id``'s line holding ``line`` and every other line untouched (``None``: it has)."""
    out: list[bytes] = []
    placed = False
    changed = False
    for raw in _lines(text):
        mine = _ours(raw, secret_id)
        if mine is None or mine[0] != version_id:
            out.append(raw)
            continue
        if placed:
            changed = True
            continue
        placed = True
        rendered = line.render(secret_id, version_id)
        if raw.rstrip(b"\r\n") != rendered:
            out.append(rendered + _ending(raw))
            changed = True
        else:
            out.append(raw)
    if not placed:
        out.append(line.render(secret_id, version_id) + b"\n")
        changed = True
    return _join(out) if changed else None
