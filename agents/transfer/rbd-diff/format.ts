/**
 * The facts of Ceph's `rbd export-diff` stream formats v1 and v2 (/work/shared/rbd-diff-format.md):
 * banners, record tags, the limits the importer applies. Everything little-endian; v1 records carry no
 * length, v2 records (all but 'e') carry `u8 tag | le64 payload_length | payload`.
 */

export type DiffVersion = 1 | 2;

export const BANNER_V1 = Buffer.from("rbd diff v1\n", "latin1");
export const BANNER_V2 = Buffer.from("rbd diff v2\n", "latin1");
/** Both diff banners are 12 bytes long. */
export const BANNER_BYTES = 12;

export const TAG = {
  from: 0x66, // 'f'
  to: 0x74, // 't'
  size: 0x73, // 's'
  protect: 0x70, // 'p' (v2 only)
  write: 0x77, // 'w'
  zero: 0x7a, // 'z'
  end: 0x65, // 'e'
} as const;

/**
 * Ceph's v2 exporter writes the 'p' record as `'p' le64 8 u8`: its length field says 8 but one byte
 * follows (Export.cc sets len = 8 before encoding a bool; the importer reads the one byte). Seen in
 * `rbd export --export-format 2` output (pacific). We write it the same way and read either 8 or 1.
 */
export const PROTECT_DECLARED_LENGTH = 8;

/** Ceph's importer rejects snapshot names longer than this. */
export const MAX_SNAP_NAME_BYTES = 4096;

export function bannerOf(v: DiffVersion): Buffer {
  return v === 1 ? BANNER_V1 : BANNER_V2;
}

/** How a tag byte reads in a message: 'w', or 0x07 for one that is not printable. */
export function tagName(tag: number): string {
  return tag >= 0x21 && tag < 0x7f ? `'${String.fromCharCode(tag)}'` : `0x${tag.toString(16).padStart(2, "0")}`;
}
