/**
 * Digest maps (see README.md): the object format, the builder the sink feeds as records arrive, and
 * block reads with a few in flight (read-back, verification).
 */
export { type Crc32c, DigestMapBuilder, isZero, type ReadAt } from "./builder";
export {
  blockCount,
  blockLength,
  blockSizeFor,
  type DigestMap,
  DigestMapError,
  decodeDigestMap,
  digestsObjectName,
  encodeDigestMap,
  MAGIC,
  MAX_MAPPED_IMAGE_BYTES,
  MIN_BLOCK_BYTES,
  mapDigest,
} from "./format";
export { type ReadBlocksOptions, readBlocks } from "./read-blocks";
