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
export { Cluster, connect, libraryVersions, type ConnectOptions } from "./cluster";
export { CephError, ClosedError, errnoName, isCephError } from "./errors";
export { type Extent, type DiffOptions, Image } from "./image";
export { type ImageCreateOptions, IoCtx, RbdFeature, featureNames } from "./io-ctx";
export type { ClusterStat, ImageStat, PoolStat, SnapInfo } from "./native";
