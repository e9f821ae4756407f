/**
 * Undoing a transfer that did not commit, from its footprint only: close the image (librbd waits for
 * writes still in flight), remove the metadata object and digest map it created, then remove the image it created
 * (BACKUP_FULL, RESTORE_NEW) or roll the base image's head back to the from-snapshot
 * (BACKUP_INCREMENTAL, if anything was written). RESTORE_ORIGINAL cannot be undone (the caller's error
 * says so). Nothing outside the footprint is touched; after a commit (snapshot made) nothing is undone.
 *
 * Every step is tried; the failures are returned for the transfer's error to name. The journal entry
 * goes only when all steps succeeded — otherwise recovery (next start) finishes the job.
 */
import { toAppError } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import { digestsObjectName } from "../digests";
import type { Footprint } from "./footprint";
import { otherWriters, removeImageRetrying } from "./image-ops";
import type { SinkCluster, SinkDeps, SinkImage } from "./ports";

export async function cleanup(deps: SinkDeps<SinkCluster>, fp: Footprint, log: Logger): Promise<unknown[]> {
  const h = fp.h;
  const name = h.destination?.image as string;
  const errors: unknown[] = [];
  const attempt = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
    } catch (e) {
      log.error(`cleanup: ${what} failed`, { err: e });
      errors.push(toAppError(e, what));
    }
  };
  if (fp.image) {
    await attempt(`closing ${fp.where}`, () => (fp.image as SinkImage).close());
    fp.image = undefined;
  }
  let left = false;
  if (fp.snapshotCreated) return errors; // committed: nothing to undo
  if (fp.commitUnknown) return errors; // perhaps committed: recovery decides by the snapshot (its entry stays)
  const io = fp.io;
  if (!io) return errors;
  if (fp.metaCreated) {
    await attempt(`removing ${metaObjectName(h.backupId)}`, () =>
      io.objRemove(metaObjectName(h.backupId)).catch((e) => {
        if (!isCephError(e, "ENOENT")) throw e;
      }),
    );
  }
  if (fp.digestsCreated) {
    await attempt(`removing ${digestsObjectName(h.backupId)}`, () =>
      io.objRemove(digestsObjectName(h.backupId)).catch((e) => {
        if (!isCephError(e, "ENOENT")) throw e;
      }),
    );
  }
  if (fp.createdImage) {
    await attempt(`removing the image ${fp.where} this transfer created`, () => removeImageRetrying(io, name));
  } else if (h.kind === TransferKind.BACKUP_INCREMENTAL && fp.wrote) {
    await attempt(`rolling ${fp.where} back to ${h.fromSnapshot}`, async () => {
      const img = await io.imageOpen(name);
      try {
        // Another client writing it now (this backup's retry on another agent, image-ops.ts otherWriters)
        // has rolled it back itself before writing: rolling back under it would erase its writes.
        const who = await otherWriters(img, deps);
        if (who) {
          // The entry stays: a later sweep (sweepLeftovers) undoes it once nobody else has the image open.
          left = true;
          log.warn("base image open by another client: not rolled back under it", { image: fp.where, who });
        } else await img.snapRollback(h.fromSnapshot);
      } finally {
        await img.close();
      }
    });
  }
  if (errors.length === 0 && !left) await deps.journal.remove(h.transferId).catch((e) => errors.push(e));
  return errors;
}
