/**
 * What the destination side needs from its surroundings, as small interfaces: the few methods of
 * agents/ceph's Cluster, IoCtx and Image it calls (so unit tests drive the sink with in-memory fakes;
 * the real classes satisfy them as they are), its limits, and its dependencies.
 */
import type { Logger } from "../../../src/common/log";
import type { Cluster, Codec, Image, IoCtx } from "../../ceph";
import type { JournalStore } from "../journal";
import type { TransferMeter } from "../meter";
import type { RecentCommits } from "./recent-commits";

/** The methods of an open RBD image the sink uses. */
export type SinkImage = Pick<
  Image,
  | "write"
  | "writeZeroes"
  | "discard"
  | "flush"
  | "close"
  | "stat"
  | "resize"
  | "snapCreate"
  | "snapList"
  | "snapRollback"
  | "watchers"
  | "metaGet"
  | "metaSet"
  | "metaRemove"
  | "diff"
  | "read"
  | "openAt"
>;

/** The methods of a pool (I/O context) the sink uses. */
export interface SinkIoCtx
  extends Pick<IoCtx, "imageCreate" | "imageRemove" | "objCreateExclusive" | "objRemove" | "objRead" | "objWriteFull"> {
  imageOpen(name: string, opts?: { readOnly?: boolean }): Promise<SinkImage>;
  close(): Promise<void>;
}

/** The methods of a cluster connection the sink uses. */
export interface SinkCluster extends Pick<Cluster, "poolExists" | "poolFullness" | "stat" | "blocklistAdd"> {
  openIoCtx(pool: string, opts: { namespace?: string; poolFullTry?: boolean }): Promise<SinkIoCtx>;
}

export interface SinkLimits {
  /** aio writes in flight. */
  writesInFlight: number;
  /** Bytes of chunk data held (received, not yet written). */
  windowBytes: number;
  /** While writes are slow the window grows up to this (write-window.ts); absent: fixed at windowBytes. */
  maxWindowBytes?: number;
  /** How often to check the pool's full flag during a transfer. */
  fullCheckIntervalMs: number;
  /** How long a transfer waits for an earlier one into the same image to let go (default 20 s; tests). */
  earlierTransferWaitMs?: number;
}

/** `C`: the agent passes its Cluster (other handlers use it too); the sink needs only SinkCluster. */
export interface SinkDeps<C extends SinkCluster = Cluster> {
  cluster: C;
  meter: TransferMeter;
  /** This process's Ceph client address (recorded in the journal; see recoverInterrupted). */
  clientAddr: string;
  /** This process's RADOS client id (client.<id>): its own watch on an image is not "another client". */
  clientId?: number;
  clusterName: string;
  fsid: string;
  journal: JournalStore;
  log: Logger;
  limits: SinkLimits;
  /** A chunk's checksum; default: the protocol's CRC-32C from the addon (a test without it passes its own). */
  checksum?: (data: Uint8Array) => number;
  /** Decompression of compressed chunks; default: the addon's codecs (a test without it passes its own). */
  codec?: Codec;
  /** Test-only: delay every write (to make transfers slow enough to interrupt). */
  writeDelayMs?: number;
  /** Resumable transfers (sink/resume.ts): how long a checkpoint is kept, how often one is taken. */
  resume?: ResumeOptions;
  /** Backups committed here, for their confirmation (recent-commits.ts); absent: not remembered. */
  commits?: RecentCommits;
}

export interface ResumeOptions {
  /** A transfer cut short keeps its image and checkpoint this long for a retry (default 3600). */
  ttlSeconds: number;
  /** Checkpoint at most every this many bytes of image offset (default 64 MiB) … */
  checkpointBytes?: number;
  /** … or this often (default 5 s), whichever comes first. */
  checkpointMs?: number;
}
