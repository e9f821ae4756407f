/**
 * rbdbackup's binding of librados and librbd: the typed facade over the native addon in agents/native.
 *
 *   connect() -> Cluster -> openIoCtx() -> IoCtx -> imageOpen() -> Image -> diff() / read() / write()...
 *
 * Every call that can wait runs off the JS thread; every failure is a CephError with `code` (errno
 * name), `errno` and `op` (a C++ exception inside the addon is a NativeError, ERR_RBDBACKUP_NATIVE);
 * every handle closes explicitly (close() is idempotent); one JS drops without closing is closed off
 * the JS thread, and whatever is left at process exit is released then. Arguments are checked here
 * (TypeError/RangeError naming the argument) before any native code runs.
 */
import "./status"; // registers how CephError maps to gRPC statuses

export { Cluster, type ConnectOptions, connect, libraryVersions } from "./cluster";
export {
  type Codec,
  type CodecAlgorithm,
  codecVersions,
  compress,
  compressBound,
  decompress,
  isCorruptData,
  nativeCodec,
  ZSTD_MAX_LEVEL,
} from "./codec";
export { crc32c, crc32cHardware, crc32cPieces } from "./crc32c";
export { CephError, ClosedError, errnoName, isCephError, NativeError } from "./errors";
export { type DiffOptions, type Extent, Image } from "./image";
export { featureNames, type ImageCreateOptions, IoCtx, RbdFeature } from "./io-ctx";
export { releaseFreeMemory } from "./memory";
export type { ChildImage, ClusterStat, ImageStat, ImageWatcher, PoolStat, SnapInfo } from "./native";
export {
  type DiffableImage,
  existingAtEither,
  objectMapAnswers,
  prunedDiff,
  type Run,
  type SnapshotHandle,
} from "./pruned-diff";
export { cephErrorStatus } from "./status";
