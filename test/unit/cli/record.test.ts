/** Backup records: the exported JSON reads back into the same record; anything else is a usage error. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../../src/cli/args";
import { parseRecord, recordText } from "../../../src/cli/commands/record";
import { BackupRecord, BackupStatus } from "../../../src/gen/rbdbackup/v1/backup_service";

describe("backup records", () => {
  it("round trip", () => {
    const record = BackupRecord.fromPartial({
      version: 1,
      backup: {
        id: "0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60",
        status: BackupStatus.BACKUP_STATUS_AVAILABLE,
        volume: { cluster: "site-a", pool: "volumes", image: "v" },
        location: { cluster: "site-b", pool: "backups" },
        sizeBytes: 10 * 1024 ** 3,
        volumeMetadata: { tier: "gold" },
        createdAt: new Date(Date.UTC(2025, 0, 1)),
      },
    });
    const text = recordText(record);
    assert.ok(text.endsWith("}\n"));
    assert.deepEqual(parseRecord(text, "r.json"), record);
  });

  it("rejects what is not a record", () => {
    for (const [text, pattern] of [
      ["not json", /r\.json is not JSON/],
      ["[1]", /not a backup record/],
      ["{}", /no backup\.id/],
      ['{"version":1,"backup":{}}', /no backup\.id/],
    ] as const) {
      assert.throws(
        () => parseRecord(text, "r.json"),
        (e: unknown) => e instanceof UsageError && pattern.test(e.message),
        text,
      );
    }
  });
});
