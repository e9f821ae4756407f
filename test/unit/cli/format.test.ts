/** Human output: sizes, times, tables, key: value blocks and specs. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  backupBlock,
  formatBytes,
  formatPercent,
  formatRate,
  formatSeconds,
  formatTime,
  jobSummary,
  keyValues,
  locationSpec,
  table,
  volumeSpec,
} from "../../../src/cli/format";
import { Backup, BackupStatus, Job, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";

describe("sizes", () => {
  it("binary units with one decimal", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(1023), "1023 B");
    assert.equal(formatBytes(1024), "1.0 KiB");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(10 * 1024 ** 2), "10.0 MiB");
    assert.equal(formatBytes(10 * 1024 ** 3), "10.0 GiB");
    assert.equal(formatBytes(2.25 * 1024 ** 4), "2.3 TiB");
    assert.equal(formatBytes(3 * 1024 ** 5), "3.0 PiB");
  });

  it("never prints 1024.0 of a unit", () => {
    assert.equal(formatBytes(1024 * 1024 - 1), "1.0 MiB");
    assert.equal(formatBytes(1024 ** 3 - 10), "1.0 GiB");
  });

  it("nonsense is a dash", () => {
    assert.equal(formatBytes(-1), "-");
    assert.equal(formatBytes(Number.NaN), "-");
  });

  it("rates and percentages", () => {
    assert.equal(formatRate(120.5 * 1024 ** 2), "120.5 MiB/s");
    assert.equal(formatPercent(1, 3), "33.3%");
    assert.equal(formatPercent(5, 4), "100.0%");
    assert.equal(formatPercent(1, 0), "-");
  });
});

describe("times", () => {
  it("ISO timestamps", () => {
    assert.equal(formatTime(new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 678))), "2025-01-02T03:04:05.678Z");
    assert.equal(formatTime(undefined), "-");
  });

  it("durations", () => {
    assert.equal(formatSeconds(0.42), "0.4 s");
    assert.equal(formatSeconds(59.94), "59.9 s");
    assert.equal(formatSeconds(245), "4m05s");
    assert.equal(formatSeconds(2 * 3600 + 3 * 60 + 10), "2h03m");
  });
});

describe("tables and blocks", () => {
  it("aligns columns on the widest cell, without trailing spaces", () => {
    const t = table(
      ["ID", "STATUS", "SIZE"],
      [
        ["a", "available", "1.0 GiB"],
        ["bbbb", "failed", ""],
      ],
    );
    assert.equal(t, "ID    STATUS     SIZE\na     available  1.0 GiB\nbbbb  failed\n");
  });

  it("a table with no rows is its header", () => {
    assert.equal(table(["ID", "STATE"], []), "ID  STATE\n");
  });

  it("key: value blocks leave out undefined values", () => {
    assert.equal(
      keyValues([
        ["id", "x"],
        ["volume id", undefined],
        ["status", "available"],
      ]),
      "id:      x\nstatus:  available\n",
    );
  });

  it("specs", () => {
    assert.equal(volumeSpec({ cluster: "a", pool: "p", namespace: "", image: "i" }), "a/p/i");
    assert.equal(volumeSpec({ cluster: "a", pool: "p", namespace: "n", image: "i" }), "a/p/n/i");
    assert.equal(locationSpec({ cluster: "b", pool: "", namespace: "" }), "b");
    assert.equal(locationSpec({ cluster: "b", pool: "backups", namespace: "n" }), "b/backups/n");
    assert.equal(volumeSpec(undefined), "-");
  });

  it("a backup's block", () => {
    const b = Backup.fromPartial({
      id: "id-1",
      status: BackupStatus.BACKUP_STATUS_AVAILABLE,
      volume: { cluster: "site-a", pool: "volumes", image: "v" },
      location: { cluster: "site-b" },
      sizeBytes: 1024 ** 3,
      volumeMetadata: { k: "v" },
      warnings: ["w1"],
    });
    const text = backupBlock(b);
    assert.match(text, /^id: +id-1$/m);
    assert.match(text, /^status: +available$/m);
    assert.match(text, /^volume: +site-a\/volumes\/v$/m);
    assert.match(text, /^location: +site-b$/m);
    assert.match(text, /^size: +1\.0 GiB$/m);
    assert.match(text, /^metadata: +k=v$/m);
    assert.match(text, /^warning: +w1$/m);
    assert.doesNotMatch(text, /^error:/m);
  });

  it("a finished job's summary", () => {
    const j = Job.fromPartial({
      id: "job-1",
      kind: JobKind.JOB_KIND_BACKUP,
      state: JobState.JOB_STATE_FAILED,
      backupId: "b-1",
      errorCode: "RESOURCE_EXHAUSTED",
      errorMessage: "pool full",
    });
    const text = jobSummary(j);
    assert.match(text, /^job: +job-1$/m);
    assert.match(text, /^state: +failed$/m);
    assert.match(text, /^backup: +b-1$/m);
    assert.match(text, /^error: +RESOURCE_EXHAUSTED: pool full$/m);
  });
});
