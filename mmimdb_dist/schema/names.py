"""Names that become paths: the one check every such name from a config goes through.

A run's `name` becomes `<output_dir>/<name>/`, a search's `<storage_path>/<name>/`; a name that
climbs out (`../../x`), starts at the root or the home folder, holds a NUL byte, or has a part
longer than a filesystem allows would write outside the folder the user chose, or fail deep in
a run with "File name too long". Checked when the config is read, with one line naming the key.
"""

from __future__ import annotations

from ..errors import ConfigError

# Bytes in one path component on common filesystems (ext4, XFS, APFS, NTFS in UTF-16 units).
MAX_PART_BYTES = 255


def check_relative_name(value: str, key: str, inside: str) -> None:
    """`value` names a path inside the folder `inside` (a config key, for the message)."""
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "~")) or "\x00" in value or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"{key}: {value!r}: expected a relative path inside {inside} "
            "(no leading / or ~, no empty, '.' or '..' parts)"
        )
    longest = max(parts, key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_PART_BYTES:
        raise ConfigError(
            f"{key}: a part of {value[:40]!r}... is {len(longest.encode('utf-8'))} bytes long; "
            f"expected at most {MAX_PART_BYTES} (a file name longer than that cannot be created)"
        )
