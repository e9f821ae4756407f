/**
 * rbdbackup's binding of librados and librbd: the typed facade over the native addon in agents/native.
 *
 *   connect() -> Cluster -> openIoCtx() -> IoCtx -> imageOpen() -> Image -> diff() / read() / write()...
 *
 * Every call that can wait runs off the JS thread; every failure is a CephError with `code` (errno
 * name), `errno` and `op`; every handle closes explicitly (close() is idempotent) and is released on
 * process exit. Arguments are checked here (TypeError/RangeError naming the argument) before any
 * native code runs.
 */
import "./status"; // registers how CephError maps to gRPC statuses

export { Cluster, type ConnectOptions, connect, libraryVersions } from "./cluster";
export { crc32c, crc32cHardware } from "./crc32c";
export { CephError, ClosedError, errnoName, isCephError } from "./errors";
export { type DiffOptions, type Extent, Image } from "./image";
export { featureNames, type ImageCreateOptions, IoCtx, RbdFeature } from "./io-ctx";
export type { ClusterStat, ImageStat, PoolStat, SnapInfo } from "./native";
export { cephErrorStatus } from "./status";
