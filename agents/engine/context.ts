/**
 * What every operation of the engine runs with: this agent's cluster connection and the way to reach
 * the other side of a transfer (a peer agent over gRPC, or this agent's own sink in-process when the
 * other side is the same cluster).
 */

import type { Logger } from "../../src/common/log";
import type { TransferOptions } from "../../src/gen/rbdbackup/v1/common";
import type { Cluster } from "../ceph";
import type { TransferMeter } from "../transfer/meter";
import type { SourceOptions } from "../transfer/source";
import type { TransferTarget } from "../transfer/target";
import type { OpenVolumes } from "./open-volumes";

export type { TransferTarget };

export interface EngineContext {
  cluster: Cluster;
  clusterName: string;
  fsid: string;
  log: Logger;
  /** Pool for backups when a request names none. */
  defaultBackupPool: string;
  source: SourceOptions;
  meter: TransferMeter;
  /** Files and block devices a path source may read (config sourcePaths; absent or [] = none). */
  sourcePaths?: readonly string[];
  /** Test-only (config testFaults, with RBDBACKUP_ENABLE_TEST_FAULTS=1): grow a volume by this many bytes just before its backup snapshot is made. */
  growBeforeSnapshotBytes?: number;
  /**
   * "" = this agent's own sink; else host:port of a peer agent. `options` (the request's
   * TransferOptions: compression, bandwidth cap) shape what goes to a peer (agents/transfer/shaping).
   */
  target(address: string, options?: TransferOptions): TransferTarget;
  /** Volumes probes opened for the backup that follows them (open-volumes.ts; absent: none are kept). */
  openVolumes?: OpenVolumes;
}
