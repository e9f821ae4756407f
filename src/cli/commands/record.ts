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
import type { NounHelp } from "../help";
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

export const recordHelp: NounHelp = {
  noun: "record",
  summary: "records (moving a backup to another coordinator)",
  verbs: {
    export: {
      synopsis: "BACKUP_ID [--out FILE]",
      summary: "the backup's record as JSON (stdout without --out)",
      details: "A record holds all another coordinator needs to restore or delete the backup (record import).",
      args: [["BACKUP_ID", "an available backup"]],
      flags: [["-o, --out FILE", 'write the record to FILE ("-": stdout, the default)']],
      examples: ["record export 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 --out vol-1.record.json"],
    },
    import: {
      synopsis: "FILE",
      summary: 'add an exported record to this coordinator ("-": stdin)',
      details:
        "The backup's snapshot must exist (checked through an agent of its cluster); a known backup: exit code 7.",
      args: [["FILE", 'a file written by record export ("-": stdin)']],
      examples: ["record import vol-1.record.json --coordinator 127.0.0.1:7310"],
    },
  },
};

export function recordCommand(argv: string[]): Promise<number> {
  return dispatch(recordHelp, { export: exportRecord, import: importRecord }, argv);
}
