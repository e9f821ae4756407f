/**
 * `rbdbackup backup verify ID [--mode metadata|sample|full|source] [--sample N] [--wait]`: VerifyBackup.
 * With --wait the exit code says how the job ended; a mismatch found is a job that SUCCEEDED (its
 * result and the backup's status, CORRUPT, say so), so --wait then exits 1 too, with the finding printed.
 */
import { VerifyMode } from "../../gen/rbdbackup/v1/agent";
import type { VerifyBackupRequest } from "../../gen/rbdbackup/v1/backup_service";
import { idempotencyKey, parseChoice, parseFlags, parseIntFlag, positionals, UsageError } from "../args";
import { withConnection } from "../connection";
import { ExitCode } from "../exit-codes";
import type { VerbHelp } from "../help";
import { afterQueued } from "../watch";

const modes = {
  metadata: VerifyMode.VERIFY_MODE_METADATA,
  sample: VerifyMode.VERIFY_MODE_SAMPLE,
  full: VerifyMode.VERIFY_MODE_FULL,
  source: VerifyMode.VERIFY_MODE_SOURCE,
};

export async function verify(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    mode: { type: "string" },
    sample: { type: "string" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [backupId = ""] = positionals("backup verify", pos, ["BACKUP_ID"]);
  const mode = parseChoice(values.mode, "mode", modes) ?? VerifyMode.VERIFY_MODE_SAMPLE;
  const samplePercent = parseIntFlag(values.sample, "sample", 1, 100) ?? 0;
  if (samplePercent && mode !== VerifyMode.VERIFY_MODE_SAMPLE) throw new UsageError("--sample needs --mode sample");
  const request: VerifyBackupRequest = {
    backupId,
    mode,
    samplePercent,
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
  };
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.verifyBackup(request, o));
    const code = await afterQueued(conn, job, { wait: values.wait === true, json: values.json === true });
    if (code !== ExitCode.Ok || values.wait !== true) return code;
    const done = await conn.call((o) => conn.client.getJob({ jobId: job.id }, o));
    return done.verify && !done.verify.ok ? ExitCode.JobFailed : code;
  });
}

export const verifyHelp: VerbHelp = {
  synopsis: "BACKUP_ID [--mode metadata|sample|full|source] [--sample N] [--idempotency-key KEY] [--wait]",
  summary: "queue a verification of a backup against the digest map written when it was made",
  details:
    "A mismatch marks the backup CORRUPT and names the first bad extent. A CORRUPT backup is kept; restores of it\n" +
    "are refused unless --allow-corrupt, and the next backup of its volume there is a full one.",
  args: [["BACKUP_ID", "the backup to verify (available or corrupt)"]],
  flags: [
    [
      "--mode metadata|sample|full|source",
      "metadata: the snapshot and the metadata and digest map objects are there; sample (default): also re-read " +
        "N% of the blocks; full: every block; source: the volume's snapshot (still on the source) against the map",
    ],
    ["--sample N", "sample only: percent of the blocks to re-read, 1 to 100 (default 10)"],
    ["--idempotency-key KEY", "the same key again returns the same job instead of queuing another"],
    ["--wait", "follow the job to its end; exit 0 when everything matched, 1 on a mismatch or a failed job"],
  ],
  examples: [
    "backup verify 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --mode full --wait",
    "backup verify 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --sample 25",
  ],
};
