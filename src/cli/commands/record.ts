/**
 * `rbdbackup record export|import`: a backup's self-contained record as JSON (ExportBackupRecord), and
 * adding such a record to a coordinator's catalog (ImportBackupRecord).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Backup, BackupRecord } from "../../gen/rbdbackup/v1/backup_service";
import { parseFlags, positionals, UsageError } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { backupBlock } from "../format";
import { note, print, printJson } from "../output";

/** The record's JSON as written by `record export`. */
export function recordText(record: BackupRecord): string {
  return `${JSON.stringify(BackupRecord.toJSON(record), null, 2)}\n`;
}

/** Parses a record file's text; anything that is not a backup record is a usage error. */
export function parseRecord(text: string, source: string): BackupRecord {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${source} is not JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UsageError(`${source} is not a backup record (a JSON object)`);
  }
  const record = BackupRecord.fromJSON(json);
  if (!record.backup?.id) throw new UsageError(`${source} is not a backup record (no backup.id)`);
  return record;
}

async function exportRecord(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, { out: { type: "string", short: "o" } });
  const [backupId = ""] = positionals("record export", pos, ["BACKUP_ID"]);
  return withConnection(values, async (conn) => {
    const record = await conn.call((o) => conn.client.exportBackupRecord({ backupId }, o));
    const text = recordText(record);
    if (values.out === undefined || values.out === "-") {
      process.stdout.write(text);
      return ExitCode.Ok;
    }
    try {
      writeFileSync(values.out, text);
    } catch (e) {
      throw new UsageError(`cannot write --out ${values.out}: ${(e as Error).message}`);
    }
    if (!values.json) note(`record of backup ${backupId} written to ${values.out}`);
    return ExitCode.Ok;
  });
}

async function importRecord(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [file = ""] = positionals("record import", pos, ["FILE"]);
  let text: string;
  try {
    text = readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const record = parseRecord(text, file === "-" ? "stdin" : file);
  return withConnection(values, async (conn) => {
    const b = await conn.call((o) => conn.client.importBackupRecord({ record }, o));
    if (values.json) printJson(Backup.toJSON(b));
    else print(backupBlock(b));
    return ExitCode.Ok;
  });
}

export function recordCommand(argv: string[]): Promise<number> {
  return dispatch("record", { export: exportRecord, import: importRecord }, argv);
}
