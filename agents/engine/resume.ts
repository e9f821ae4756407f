/**
 * The source's side of a resumable transfer (transfer.proto ResumePoint): ask the destination where
 * a retry may resume, send only the rest (header.resume_offset, the prefix digest rule), and fall
 * back to starting over — with the reason for the result — when there is no usable checkpoint or the
 * destination refuses the resume. And which failures keep the source snapshot for that retry.
 */
import { messageOf, Status, statusOf } from "../../src/common/errors";
import type { Logger } from "../../src/common/log";
import type { TransferHeader, TransferMessage, TransferSummary } from "../../src/gen/rbdbackup/v1/transfer";
import type { SourceResume } from "../transfer/source";
import type { TransferTarget } from "../transfer/target";

/** ResumePoint's reason when simply nothing was kept (a first attempt): not worth a fallback reason. */
const NOTHING_KEPT = /^no checkpoint of an earlier attempt is kept/;

export interface Resumed {
  summary: TransferSummary;
  /** The offset this attempt resumed at (0: from the start). */
  resumedFrom: number;
  /** Why it tried and started over ("" when it resumed or did not try). */
  fallbackReason: string;
}

/** Where a retry of `header` may resume: the resume to send, or why it starts over ("" = nothing kept). */
export async function askResumePoint(
  target: TransferTarget,
  header: TransferHeader,
  signal: AbortSignal,
  capability: string | undefined,
): Promise<{ resume?: SourceResume; reason: string }> {
  try {
    const r = await target.resumePoint(header, signal, capability);
    if (r.offset <= 0) return { reason: NOTHING_KEPT.test(r.reason) ? "" : r.reason };
    if (!Number.isSafeInteger(r.offset) || r.offset > header.imageSize || r.prefixDigest.length !== 32) {
      return { reason: `the destination answered an unusable resume point (offset ${r.offset})` };
    }
    return {
      resume: {
        offset: r.offset,
        prefixDigest: r.prefixDigest,
        dataChunks: r.dataChunks,
        dataBytes: r.dataBytes,
        zeroRanges: r.zeroRanges,
        zeroBytes: r.zeroBytes,
      },
      reason: "",
    };
  } catch (e) {
    signal.throwIfAborted();
    return { reason: `asking the destination where to resume failed: ${messageOf(e)}` };
  }
}

/**
 * Sends `header`'s transfer, resumed when `ask` and the destination has a checkpoint for it.
 * `messages(header, resume)` builds a fresh message stream (and its stats) for one try.
 */
export async function sendResumable(
  target: TransferTarget,
  header: TransferHeader,
  messages: (h: TransferHeader, resume?: SourceResume) => AsyncIterable<TransferMessage>,
  signal: AbortSignal,
  capability: string | undefined,
  ask: boolean,
  log: Logger,
): Promise<Resumed> {
  let fallbackReason = "";
  if (ask) {
    const { resume, reason } = await askResumePoint(target, header, signal, capability);
    fallbackReason = reason;
    if (resume) {
      const h = { ...header, resumeOffset: resume.offset, resumePrefixDigest: resume.prefixDigest };
      log.info("resuming the transfer of an earlier attempt", { offset: resume.offset });
      try {
        return {
          summary: await target.transfer(messages(h, resume), signal, capability),
          resumedFrom: resume.offset,
          fallbackReason: "",
        };
      } catch (e) {
        // The checkpoint changed between ResumePoint and the Transfer: nothing was written, start over.
        if (signal.aborted || statusOf(e) !== Status.FAILED_PRECONDITION) throw e;
        fallbackReason = `the destination refused the resume at ${resume.offset}: ${messageOf(e)}`;
      }
    }
    if (fallbackReason) log.info("starting the transfer over", { reason: fallbackReason });
  }
  const summary = await target.transfer(messages(header), signal, capability);
  return { summary, resumedFrom: 0, fallbackReason };
}

/**
 * Failures a retry may resume after: the transfer cut short, not cancelled, not refused, not bad data.
 * CANCELLED here is the peer's (a destination that reset the stream, e.g. shutting down): a cancel of
 * this attempt's own is its aborted signal (keepsForRetry).
 */
const CUT_SHORT = new Set<Status>([
  Status.CANCELLED,
  Status.UNAVAILABLE,
  Status.ABORTED,
  Status.DEADLINE_EXCEEDED,
  Status.INTERNAL,
  Status.UNKNOWN,
]);

/**
 * Whether a failed attempt keeps its source snapshot for the retry the coordinator will make
 * (`resumable`): only a transfer cut short, never a cancel.
 */
export function keepsForRetry(resumable: boolean, signal: AbortSignal, e: unknown): boolean {
  return resumable && !signal.aborted && CUT_SHORT.has(statusOf(e));
}
