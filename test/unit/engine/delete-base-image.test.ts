/**
 * The agent's DeleteBackup removes a base image once no backup snapshot is left on it, so it acts only
 * on a base image name (<volume>.backup.<backup uuid>): a request naming a live volume as the base image
 * is INVALID_ARGUMENT before the cluster is touched. Fakes: a cluster that fails the test if used.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import type { EngineContext } from "../../../agents/engine/context";
import { deleteBackup } from "../../../agents/engine/delete";
import { DeleteBackupDataRequest } from "../../../src/gen/rbdbackup/v1/agent";

describe("agent DeleteBackup: only a base image", () => {
  it("a volume named as the base image: INVALID_ARGUMENT, the cluster untouched", async () => {
    const untouched = new Proxy({}, { get: (_t, k) => assert.fail(`the cluster was used (${String(k)})`) });
    const ctx = { cluster: untouched, log: untouched } as unknown as EngineContext;
    const id = randomUUID();
    for (const baseImage of ["prod-volume", `prod.backup.${id}x`, "prod.backup.not-a-uuid"]) {
      await assert.rejects(
        deleteBackup(ctx, DeleteBackupDataRequest.fromPartial({ backupId: id, pool: "backups", baseImage })),
        (e: unknown) =>
          (e as { status?: Status }).status === Status.INVALID_ARGUMENT &&
          /is not a base image name/.test((e as Error).message),
        baseImage,
      );
    }
  });
});
