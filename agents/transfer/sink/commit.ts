/**
 * Committing a transfer, once every write is done and flushed. A backup writes its digest map
 * (backup.<id>.digests), its metadata object (backup.<id>.meta, exclusive create) and then creates its snapshot — the point from which the
 * backup exists; a restore applies the image-meta it carries. An image this transfer created loses
 * its incomplete marker last (a failure there is only a warning: the snapshot already counts).
 */
import { alreadyExists } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { isCephError } from "../../ceph";
import { writeDigests } from "./digests";
import type { Footprint } from "./footprint";
import { INCOMPLETE_KEY } from "./image-ops";
import type { SinkCluster, SinkDeps, SinkImage, SinkIoCtx } from "./ports";

export async function commit(deps: SinkDeps<SinkCluster>, fp: Footprint, log: Logger): Promise<void> {
  const h = fp.h;
  const image = fp.image as SinkImage;
  const io = fp.io as SinkIoCtx;
  if (h.kind === TransferKind.BACKUP_FULL || h.kind === TransferKind.BACKUP_INCREMENTAL) {
    await writeDigests(fp);
    if (h.metadataJson.length > 0) {
      try {
        await io.objCreateExclusive(metaObjectName(h.backupId), Buffer.from(h.metadataJson));
      } catch (e) {
        if (isCephError(e, "EEXIST"))
          throw alreadyExists(`${metaObjectName(h.backupId)} already exists (backup id reused?)`);
        throw e;
      }
      fp.metaCreated = true;
      if (fp.journal) {
        fp.journal = { ...fp.journal, metaCreated: true };
        await deps.journal.write(fp.journal);
      }
    }
    // The backup exists from here on.
    await image.snapCreate(h.toSnapshot);
    fp.snapshotCreated = true;
  } else {
    for (const [k, v] of Object.entries(h.imageMeta)) await image.metaSet(k, v);
  }
  if (fp.createdImage) {
    await image.metaRemove(INCOMPLETE_KEY).catch((e: Error) => {
      fp.warnings.push(`could not remove the ${INCOMPLETE_KEY} marker: ${e.message}`);
      log.warn("marker removal failed", { err: e });
    });
  }
}
