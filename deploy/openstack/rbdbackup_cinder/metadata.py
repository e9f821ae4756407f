"""Cinder's volume metadata (the versioned JSON of BackupMetadataAPI.get) carried in rbdbackup's
per-backup volume_metadata map, which keeps it in the backup's metadata object (backup.<id>.meta,
written once) and returns it on restore. Map values are at most 4096 characters, so the JSON is split
into numbered parts; the map holds at most 64 entries, which bounds it to 62 parts (about 250 KB)."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

PART_KEY = "cinder.meta.%03d"
PARTS_KEY = "cinder.meta.parts"
BACKUP_KEY = "cinder.backup_id"
PART_SIZE = 4096
MAX_PARTS = 62


class MetadataTooLarge(ValueError):
    pass


def pack(json_meta: Optional[str], cinder_backup_id: str) -> Dict[str, str]:
    out = {BACKUP_KEY: cinder_backup_id}
    if not json_meta:
        return out
    parts = [json_meta[i : i + PART_SIZE] for i in range(0, len(json_meta), PART_SIZE)]
    if len(parts) > MAX_PARTS:
        raise MetadataTooLarge(
            f"the volume's metadata is {len(json_meta)} characters of JSON; rbdbackup keeps at most "
            f"{MAX_PARTS * PART_SIZE}"
        )
    out[PARTS_KEY] = str(len(parts))
    for i, p in enumerate(parts):
        out[PART_KEY % i] = p
    return out


def unpack(meta: Mapping[str, str]) -> Optional[str]:
    """The JSON saved by pack, or None when the backup carries none (or it is incomplete)."""
    n = meta.get(PARTS_KEY)
    if not n or not n.isdigit():
        return None
    parts = [meta.get(PART_KEY % i) for i in range(int(n))]
    if any(p is None for p in parts):
        return None
    return "".join(parts)  # type: ignore[arg-type]
