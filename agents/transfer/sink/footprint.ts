/**
 * What one transfer has done to the destination so far: the image it opened or created, whether it
 * wrote, the metadata object and the snapshot it made, its journal entry. prepare.ts and commit.ts
 * fill it in as they go; cleanup.ts undoes exactly what it records — and nothing else.
 */
import type { TransferHeader } from "../../../src/gen/rbdbackup/v1/transfer";
import type { JournalEntry } from "../journal";
import type { SinkDigests } from "./digests";
import type { SinkImage, SinkIoCtx } from "./ports";

export interface Footprint {
  readonly h: TransferHeader;
  /** The transfer's own signal (cut short, cancelled): long steps of prepare look at it. */
  signal?: AbortSignal;
  /** pool[/namespace]/image, for messages. */
  readonly where: string;
  io?: SinkIoCtx;
  image?: SinkImage;
  createdImage: boolean;
  /** No data was in the image before: zero ranges need no writes. */
  fresh: boolean;
  /** Writes were started: the image's content may have changed. */
  wrote: boolean;
  metaCreated: boolean;
  snapshotCreated: boolean;
  /**
   * The snapshot's creation failed and whether it was made anyway is unknown (the listing that would
   * say failed too): nothing may be undone — the journal entry stays for recovery, which decides by the
   * snapshot (commit.ts).
   */
  commitUnknown?: boolean;
  /** A backup's digest map being built (digests.ts), and whether backup.<id>.digests was written. */
  digests?: SinkDigests;
  digestsCreated: boolean;
  journal?: JournalEntry;
  warnings: string[];
  /**
   * A failback's word on what it kept of the volume before writing (its safety snapshot, earlier
   * failbacks' ones): also in the error of a failback that fails, whose job keeps no warnings.
   */
  kept?: string;
}

/** pool[/namespace]/image, for messages and logs. */
export const imageWhere = (d: { pool: string; namespace: string; image: string }): string =>
  `${d.pool}${d.namespace ? `/${d.namespace}` : ""}/${d.image}`;

export function newFootprint(h: TransferHeader): Footprint {
  const d = h.destination as NonNullable<TransferHeader["destination"]>;
  return {
    h,
    where: imageWhere(d),
    createdImage: false,
    fresh: false,
    wrote: false,
    metaCreated: false,
    snapshotCreated: false,
    digestsCreated: false,
    warnings: [],
  };
}
