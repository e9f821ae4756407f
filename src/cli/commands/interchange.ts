/**
 * `rbdbackup backup export|import`: a backup as an `rbd export-diff` stream (ExportBackup), and a backup
 * made from one (ImportBackup). Both stream without a deadline (a volume's data takes what it takes);
 * Ctrl-C cancels the call, and with it the job while its data moves — once an import's whole input was
 * sent (and the agent took it) the job goes on without the call and may still make the backup, which
 * the message says. The export writes to stdout (never to a terminal) or
 * --out FILE (removed again when the export fails); the import reads stdin or --in FILE.
 */
import { createReadStream, createWriteStream, renameSync, rmSync, type WriteStream } from "node:fs";
import type { Writable } from "node:stream";
import { DiffFormat, type ImportBackupMessage } from "../../gen/rbdbackup/v1/backup_service";
import {
  idempotencyKey,
  parseChoice,
  parseFlags,
  parseLocationSpec,
  parseMeta,
  parseVolumeSpec,
  positionals,
  requiredFlag,
  UsageError,
} from "../args";
import { withConnection } from "../connection";
import { CliFailure, ExitCode, exitCodeForJobState } from "../exit-codes";
import type { NounHelp } from "../help";
import { note } from "../output";
import { afterQueued } from "../watch";

const formats = { "rbd-diff-v1": DiffFormat.DIFF_FORMAT_RBD_V1, "rbd-diff-v2": DiffFormat.DIFF_FORMAT_RBD_V2 };

/** Aborted on Ctrl-C (the call is cancelled; the coordinator cancels the job). */
function interruptible(): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once("SIGINT", onSigint);
  return { signal: ac.signal, done: () => process.off("SIGINT", onSigint) };
}

/** The error to report: a stream cut by Ctrl-C is one line and exit code 130, not a stack and "job failed". */
function interrupted(signal: AbortSignal, e: unknown, what: string): unknown {
  return signal.aborted ? new CliFailure(ExitCode.Interrupted, `interrupted: ${what}`) : e;
}

/** Writes with the sink's backpressure. */
async function writeAll(out: Writable, data: Uint8Array): Promise<void> {
  if (!out.write(data)) await new Promise<void>((resolve) => out.once("drain", resolve));
}

async function exportVerb(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    format: { type: "string" },
    from: { type: "string" },
    out: { type: "string", short: "o" },
  });
  const [backupId = ""] = positionals("backup export", pos, ["BACKUP_ID"]);
  const format = parseChoice(values.format, "format", formats) ?? DiffFormat.DIFF_FORMAT_RBD_V1;
  const toFile = values.out !== undefined && values.out !== "-";
  if (!toFile && process.stdout.isTTY) {
    throw new UsageError("backup export writes binary data: redirect stdout to a file or use --out FILE");
  }
  let out: Writable = process.stdout;
  // Written beside --out and renamed over it only once the export succeeded: a failed export (bad input,
  // an unreachable coordinator, Ctrl-C) leaves an existing FILE as it was.
  const partial = `${values.out}.${process.pid}.partial`;
  if (toFile) {
    const f: WriteStream = createWriteStream(partial, { flags: "wx" });
    await new Promise<void>((resolve, reject) => {
      f.once("open", () => resolve());
      f.once("error", (e) => reject(new UsageError(`cannot write beside --out ${values.out}: ${e.message}`)));
    });
    out = f;
  }
  const stop = interruptible();
  let ok = false;
  try {
    const code = await withConnection(values, async (conn) => {
      let bytes = 0;
      let jobId = "";
      const req = { backupId, fromBackupId: values.from ?? "", format };
      for await (const c of conn.client.exportBackup(req, { signal: stop.signal })) {
        if (c.jobId) jobId = c.jobId;
        if (c.data.length) {
          bytes += c.data.length;
          await writeAll(out, c.data);
        }
      }
      if (!values.json) note(`backup ${backupId} exported by job ${jobId}: ${bytes} bytes`);
      return ExitCode.Ok;
    });
    ok = true;
    return code;
  } catch (e) {
    throw interrupted(
      stop.signal,
      e,
      `the export stopped${toFile ? ` (${values.out} not written)` : ""}; its job ends with the stream`,
    );
  } finally {
    stop.done();
    if (toFile) {
      await new Promise<void>((resolve) => out.end(resolve));
      if (ok) renameSync(partial, values.out as string);
      else rmSync(partial, { force: true });
    }
  }
}

async function importVerb(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    volume: { type: "string" },
    location: { type: "string" },
    parent: { type: "string" },
    "volume-id": { type: "string" },
    meta: { type: "string", multiple: true },
    format: { type: "string" },
    in: { type: "string", short: "i" },
    "idempotency-key": { type: "string" },
    "taken-at": { type: "string" },
  });
  positionals("backup import", pos, []);
  const takenAt = values["taken-at"] === undefined ? undefined : rfc3339(values["taken-at"], "--taken-at");
  const volume = parseVolumeSpec(requiredFlag(values.volume, "volume", "backup import"), "--volume");
  const location = parseLocationSpec(requiredFlag(values.location, "location", "backup import"), "--location");
  const fromFile = values.in !== undefined && values.in !== "-";
  if (!fromFile && process.stdin.isTTY) {
    throw new UsageError("backup import reads an rbd export-diff stream: redirect stdin from a file or use --in FILE");
  }
  const input = fromFile ? createReadStream(values.in as string) : process.stdin;
  if (fromFile) {
    await new Promise<void>((resolve, reject) => {
      input.once("open" as "close", () => resolve());
      input.once("error", (e: Error) => reject(new UsageError(`cannot read --in ${values.in}: ${e.message}`)));
    });
  }
  const header: ImportBackupMessage = {
    body: {
      $case: "header",
      value: {
        volume,
        location,
        volumeId: values["volume-id"] ?? "",
        volumeMetadata: parseMeta(values.meta),
        parentBackupId: values.parent ?? "",
        idempotencyKey: idempotencyKey(values["idempotency-key"]),
        format: parseChoice(values.format, "format", formats) ?? DiffFormat.DIFF_FORMAT_UNSPECIFIED,
        takenAt,
      },
    },
  };
  let sentAll = false;
  async function* messages(): AsyncIterable<ImportBackupMessage> {
    yield header;
    for await (const chunk of input) yield { body: { $case: "data", value: chunk as Buffer } };
    sentAll = true;
  }
  const stop = interruptible();
  try {
    return await withConnection(values, async (conn) => {
      const job = await conn.client.importBackup(messages(), { signal: stop.signal });
      const code = await afterQueued(conn, job, { wait: false, json: values.json === true });
      return code === ExitCode.Ok ? (exitCodeForJobState(job.state) ?? code) : code;
    });
  } catch (e) {
    throw interrupted(
      stop.signal,
      e,
      sentAll
        ? "the whole stream was sent, so its job may go on and still make the backup: see `rbdbackup job list` before importing it again"
        : "the import stream was cut; its job does not complete",
    );
  } finally {
    stop.done();
    input.destroy();
  }
}

/**
 * An RFC 3339 time with its zone (Z or ±hh:mm) — a backup's time is never guessed from this host's zone —
 * and a day that exists (Date would roll 02-30 over into March).
 */
export function rfc3339(s: string, flag: string): Date {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i.exec(s);
  const d = new Date(s);
  const [y, mo, day] = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0];
  const exists = m && new Date(Date.UTC(y, mo - 1, day)).getUTCDate() === day && mo >= 1 && mo <= 12;
  if (!m || !exists || Number.isNaN(d.getTime()))
    throw new UsageError(`${flag} "${s}" is not an RFC 3339 time with its zone (e.g. 2026-12-01T03:00:00Z)`);
  return d;
}

const FORMAT_FLAG: [string, string] = [
  "--format rbd-diff-v1|rbd-diff-v2",
  "v1 (default): as `rbd export-diff` writes, what `rbd import-diff` reads; v2: the diff stream inside `rbd export --export-format 2` files (`rbd import-diff` refuses it)",
];

export const interchangeHelp: NounHelp["verbs"] = {
  export: {
    synopsis: "BACKUP_ID [--format rbd-diff-v1|rbd-diff-v2] [--from BACKUP_ID] [--out FILE]",
    summary:
      "the backup as an `rbd export-diff` stream (stdout, or --out FILE); `rbd import-diff` applies the v1 format (the default)",
    args: [["BACKUP_ID", "an available backup"]],
    flags: [
      FORMAT_FLAG,
      ["--from BACKUP_ID", "only the changes since this older backup of the same chain"],
      ["-o, --out FILE", 'write the stream to FILE ("-": stdout, the default; never a terminal)'],
    ],
    examples: [
      "backup export 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 > vol-1.rbddiff",
      "backup export 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 | rbd import-diff - rbd/vol-1-copy",
    ],
  },
  import: {
    synopsis:
      "--volume CLUSTER/POOL[/NAMESPACE]/IMAGE --location CLUSTER[/POOL[/NAMESPACE]] [--parent BACKUP_ID] " +
      "[--volume-id ID] [--meta KEY=VALUE]... [--format rbd-diff-v1|rbd-diff-v2] [--taken-at TIME] [--in FILE] " +
      "[--idempotency-key KEY]",
    summary: "a backup made from an `rbd export-diff` stream (stdin, or --in FILE); answers once it is made",
    details: "A truncated or malformed stream is refused (exit code 7) and nothing is kept.",
    flags: [
      ["--volume CLUSTER/POOL[/NAMESPACE]/IMAGE", "the volume the backup is of (required; it need not exist)"],
      ["--location CLUSTER[/POOL[/NAMESPACE]]", "where to keep it (required; no pool: the default backup pool)"],
      [
        "--parent BACKUP_ID",
        "a stream with a from-snapshot applies onto this backup, the newest of its chain (none: a new chain)",
      ],
      ["--volume-id ID", "the control plane's id of the volume, kept with the backup"],
      ["--meta KEY=VALUE", "metadata kept with the backup and returned on restore (repeat for more)"],
      ["--format rbd-diff-v1|rbd-diff-v2", "default: detected from the stream"],
      [
        "--taken-at TIME",
        "when the stream's data was taken (ISO 8601, e.g. the exported backup's created_at): the backup's time; " +
          "default: the import's, as a fresh backup",
      ],
      ["-i, --in FILE", 'read the stream from FILE ("-": stdin, the default)'],
      ["--idempotency-key KEY", "the same key again returns the first import's job"],
    ],
    examples: [
      "backup import --volume site-a/rbd/vol-1 --location site-b/backups < vol-1.rbddiff",
      "backup import --volume site-a/rbd/vol-1 --location site-b --taken-at 2026-12-01T03:00:00Z -i vol-1.rbddiff",
      "backup import --volume site-a/rbd/vol-1 --location site-b --parent 0b5f4c2e-4f3b-4a8e-9a63-1d2c3b4a5f60 -i d",
    ],
  },
};

export { exportVerb, importVerb };
