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
 * Ceph pacific's v2 exporter writes the 'p' record as `'p' le64 8 u8`: its length field says 8 but one
 * byte follows (seen in `rbd export --export-format 2` of 16.2.15 here; later releases and the format
 * declare 1). Every Ceph importer reads the one byte whatever the declared length. We write it as the
 * installed Ceph does (our streams re-write its own byte for byte: test/integration/interchange) and
 * read either 8 or 1. A third-party reader that skips this record by its declared length misreads
 * pacific's streams and ours alike.
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
