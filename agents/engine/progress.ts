/**
 * Progress of a running operation, for whoever watches it (the agent session reports it to the
 * coordinator a few times a second). The engine sets the phase and the image size and hands the
 * transfer's live counters over; readers take snapshots.
 */
import type { SourceStats } from "../transfer/source";

export interface Progress {
  phase: string;
  /** Image size: what bytesDone counts towards. */
  bytesTotal: number;
  /** The running transfer's counters (null before the transfer starts). */
  stats: SourceStats | null;
}

export function newProgress(): Progress {
  return { phase: "starting", bytesTotal: 0, stats: null };
}

export interface ProgressSnapshot {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  bytesTransferred: number;
}

export function snapshotOf(p: Progress): ProgressSnapshot {
  return {
    phase: p.phase,
    bytesDone: p.stats?.position ?? 0,
    bytesTotal: p.bytesTotal,
    bytesTransferred: p.stats?.dataBytes ?? 0,
  };
}
