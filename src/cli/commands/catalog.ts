/**
 * `rbdbackup catalog rebuild --cluster NAME [--pool P ...] [--dry-run]`: RebuildCatalog, the control
 * plane's disaster recovery. Prints what was found, imported, already present and skipped (with each
 * reason). Exit code 0 even when something was skipped — the rebuild did what it could; a warning line
 * on stderr says how many were skipped (scripts read `skipped` from --json).
 */

import type { RebuildFinding } from "../../gen/rbdbackup/v1/backup_service";
import { type RebuildCatalogResponse, RebuildCatalogResponse as Response } from "../../gen/rbdbackup/v1/backup_service";
import { parseFlags, positionals, UsageError } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import type { NounHelp } from "../help";
import { note, print, printJson } from "../output";

const place = (f: RebuildFinding) => (f.namespace ? `${f.pool}/${f.namespace}` : f.pool);
const volume = (f: RebuildFinding) =>
  f.volume
    ? `${f.volume.cluster || "?"}/${f.volume.pool}/${f.volume.namespace ? `${f.volume.namespace}/` : ""}${f.volume.image}`
    : "-";

/** The report for people: counts, then one line per imported or skipped backup. */
export function rebuildText(r: RebuildCatalogResponse, dryRun: boolean): string {
  const lines = [
    `found ${r.found} meta object(s): ${r.imported.length} ${dryRun ? "would be imported" : "imported"}, ${r.present.length} already present, ${r.skipped.length} skipped; ${r.volumes} volume(s)`,
  ];
  for (const f of r.imported)
    lines.push(`${dryRun ? "would import" : "imported"}  ${f.backupId}  ${place(f)}  ${volume(f)}`);
  for (const f of r.skipped) lines.push(`skipped  ${f.backupId}  ${place(f)}  ${volume(f)}: ${f.reason}`);
  return lines.join("\n");
}

async function rebuild(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    cluster: { type: "string" },
    pool: { type: "string", multiple: true },
    "dry-run": { type: "boolean" },
  });
  positionals("catalog rebuild", pos, []);
  const cluster = values.cluster ?? "";
  if (!cluster) throw new UsageError("catalog rebuild: --cluster is required");
  const dryRun = values["dry-run"] === true;
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.rebuildCatalog({ cluster, pools: values.pool ?? [], dryRun }, o));
    if (values.json) printJson(Response.toJSON(r));
    else print(rebuildText(r, dryRun));
    if (r.skipped.length) note(`warning: ${r.skipped.length} meta object(s) skipped, not imported (reasons above)`);
    return ExitCode.Ok;
  });
}

export const catalogHelp: NounHelp = {
  noun: "catalog",
  summary: "the coordinator's catalog (disaster recovery of the control plane)",
  verbs: {
    rebuild: {
      synopsis: "--cluster NAME [--pool POOL ...] [--dry-run]",
      summary: "rebuild the catalog from the meta objects and snapshots on a backup cluster (control plane DR)",
      details:
        "Reads every backup.<id>.meta object (in every RADOS namespace of the pools scanned) through a connected\n" +
        "agent of the cluster and imports each backup whose snapshot exists on its base image and whose parent is\n" +
        "catalogued or imported with it; backups already in the catalog are left as they are. Prints what was\n" +
        "found, imported, already present and skipped, each skip with its reason. Exit code 0 even when some were\n" +
        "skipped: a warning on stderr says how many (--json lists them). A large cluster may need a longer --timeout.",
      args: [],
      flags: [
        ["--cluster NAME", "the backup cluster to scan, through its connected agent (required)"],
        ["--pool POOL", "scan only this pool (repeatable; default: every pool of the cluster)"],
        ["--dry-run", "report what would be imported, write nothing"],
      ],
      examples: [
        "catalog rebuild --cluster site-b --dry-run",
        "catalog rebuild --cluster site-b --pool backups --timeout 600",
      ],
    },
  },
};

export function catalogCommand(argv: string[]): Promise<number> {
  return dispatch(catalogHelp, { rebuild }, argv);
}
