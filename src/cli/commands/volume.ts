/**
 * `rbdbackup volume failover`: the failover drill (FailoverVolume): the volume's newest available
 * backup at a location becomes a writable volume there (a CLONE restore, optionally flattened), and the
 * volume's protection is paused. Prints the restore job (and follows it with --wait).
 */
import { FailoverVolumeResponse } from "../../gen/rbdbackup/v1/backup_service";
import {
  idempotencyKey,
  parseFlags,
  parseLocationSpec,
  parseVolumeSpec,
  positionals,
  requiredFlag,
  UsageError,
} from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import type { NounHelp } from "../help";
import { note, printJson } from "../output";
import { afterQueued } from "../watch";

async function failover(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    from: { type: "string" },
    target: { type: "string" },
    flatten: { type: "boolean" },
    reason: { type: "string" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [spec = ""] = positionals("volume failover", pos, ["CLUSTER/POOL[/NAMESPACE]/IMAGE"]);
  const volume = parseVolumeSpec(spec);
  const location = parseLocationSpec(requiredFlag(values.from, "from", "volume failover"), "--from");
  const target = parseVolumeSpec(requiredFlag(values.target, "target", "volume failover"), "--target");
  if (target.cluster !== location.cluster) {
    throw new UsageError(`--target must be on the --from cluster ${location.cluster} (got ${target.cluster})`);
  }
  const request = {
    volume,
    location,
    target,
    flatten: values.flatten === true,
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
    reason: values.reason ?? "",
  };
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.failoverVolume(request, o));
    if (values.json && !values.wait) {
      printJson(FailoverVolumeResponse.toJSON(r));
      return ExitCode.Ok;
    }
    if (!values.json) {
      const paused = r.pausedPolicies.length ? r.pausedPolicies.join(", ") : "none";
      note(`failing over from backup ${r.backup?.id ?? "?"}; protection paused for policies: ${paused}`);
    }
    if (!r.job) return ExitCode.Ok;
    return afterQueued(conn, r.job, { wait: values.wait === true, json: values.json === true });
  });
}

export const volumeHelp: NounHelp = {
  noun: "volume",
  summary: "volumes (failover)",
  verbs: {
    failover: {
      synopsis:
        "CLUSTER/POOL[/NAMESPACE]/IMAGE --from CLUSTER[/POOL[/NAMESPACE]] --target CLUSTER/POOL[/NAMESPACE]/IMAGE " +
        "[--flatten] [--reason TEXT] [--idempotency-key KEY] [--wait]",
      summary: "make the volume's newest backup at a site a writable volume there, and pause its protection",
      details:
        "The target is an RBD clone of the backup's snapshot (usable in seconds, no data copied); the backup\n" +
        "cannot be deleted until the clone is flattened or removed. Policies protecting the volume are paused\n" +
        "for it (resume them with the policy commands).",
      args: [["CLUSTER/POOL[/NAMESPACE]/IMAGE", "the protected volume (e.g. on the lost site)"]],
      flags: [
        ["--from CLUSTER[/POOL[/NAMESPACE]]", "where its backups are kept (no pool: any pool of that cluster)"],
        ["--target CLUSTER/POOL[/NAMESPACE]/IMAGE", "the volume to create, on the --from cluster (must not exist)"],
        ["--flatten", "then copy the backup's data into it (a FLATTEN job), detaching it from the backup"],
        ["--reason TEXT", "kept with the paused protection records"],
        ["--idempotency-key KEY", "the same key again returns the same job"],
        ["--wait", "follow the restore job until it ends"],
      ],
      examples: ["volume failover site-a/rbd/vol-1 --from site-b/backups --target site-b/rbd/vol-1 --wait"],
    },
  },
};

export function volumeCommand(argv: string[]): Promise<number> {
  return dispatch(volumeHelp, { failover }, argv);
}
