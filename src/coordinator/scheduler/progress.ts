/**
 * Live progress of running jobs: kept in memory only (it matters for watchers, not for resuming), with
 * the transfer rate smoothed as an exponential moving average of the rates between reports.
 */
import type { JobProgressReport } from "../../gen/rbdbackup/v1/session";

export interface LiveProgress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
  bytesTransferred: number;
  rateBytesPerSecond: number;
  /** Epoch ms of the report. */
  at: number;
}

/** Weight of the newest rate in the moving average. */
const NEW_RATE_WEIGHT = 0.3;

/** The progress after a report at `now`: the rate averages in the bytes done since the previous one. */
export function nextProgress(prev: LiveProgress | undefined, r: JobProgressReport, now: number): LiveProgress {
  let rate = prev?.rateBytesPerSecond ?? 0;
  if (prev && now > prev.at && r.bytesDone >= prev.bytesDone) {
    const inst = ((r.bytesDone - prev.bytesDone) * 1000) / (now - prev.at);
    rate = prev.rateBytesPerSecond ? (1 - NEW_RATE_WEIGHT) * prev.rateBytesPerSecond + NEW_RATE_WEIGHT * inst : inst;
  }
  return {
    phase: r.phase,
    bytesDone: r.bytesDone,
    bytesTotal: r.bytesTotal,
    bytesTransferred: r.bytesTransferred,
    rateBytesPerSecond: rate,
    at: now,
  };
}
