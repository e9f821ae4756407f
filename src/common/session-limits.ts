/**
 * The largest message on an agent's coordinator session, either way. Above grpc's 4 MiB default: a
 * SOURCE verification carries a backup's digest map (up to 6 MiB: a chain starts anew before its map
 * outgrows that, src/coordinator/scheduler/verify.ts MAX_CHAIN_MAP_BLOCKS), and a message over the
 * limit ends the whole session.
 */
export const SESSION_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
