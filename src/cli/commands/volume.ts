/**
 * `rbdbackup volume failover`: the failover drill (FailoverVolume): the volume's newest available
 * backup at a location becomes a writable volume there (a CLONE restore, optionally flattened), and the
 * volume's protection is paused. `rbdbackup volume failback` (FailbackVolume): the original volume takes
 * the failed-over volume's content, by its changes since the backup when possible. `rbdbackup volume
 * flatten` (FlattenVolume): a clone made by either detaches from its backup. Each prints the job (and
 * follows it with --wait).
 */
import { FailbackVolumeResponse, FailoverVolumeResponse } from "../../gen/rbdbackup/v1/backup_service";
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

async function failback(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    from: { type: "string" },
    backup: { type: "string" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [spec = ""] = positionals("volume failback", pos, ["CLUSTER/POOL[/NAMESPACE]/IMAGE"]);
  const volume = parseVolumeSpec(spec);
  const source = parseVolumeSpec(requiredFlag(values.from, "from", "volume failback"), "--from");
  const request = {
    volume,
    source,
    backupId: values.backup ?? "",
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
  };
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.failbackVolume(request, o));
    if (values.json && !values.wait) {
      printJson(FailbackVolumeResponse.toJSON(r));
      return ExitCode.Ok;
    }
    if (!values.json) note(`failing back from ${spec}'s backup ${r.backup?.id ?? "?"} (the common point)`);
    if (!r.job) return ExitCode.Ok;
    return afterQueued(conn, r.job, { wait: values.wait === true, json: values.json === true });
  });
}

async function flatten(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    backup: { type: "string" },
    "idempotency-key": { type: "string" },
    wait: { type: "boolean" },
  });
  const [spec = ""] = positionals("volume flatten", pos, ["CLUSTER/POOL[/NAMESPACE]/IMAGE"]);
  const request = {
    volume: parseVolumeSpec(spec),
    backupId: values.backup ?? "",
    idempotencyKey: idempotencyKey(values["idempotency-key"]),
  };
  return withConnection(values, async (conn) => {
    const job = await conn.call((o) => conn.client.flattenVolume(request, o));
    if (!values.json) note(`flattening ${spec}: it will no longer depend on backup ${job.backupId}`);
    return afterQueued(conn, job, { wait: values.wait === true, json: values.json === true });
  });
}

export const volumeHelp: NounHelp = {
  noun: "volume",
  summary: "volumes (failover, failback, flatten)",
  verbs: {
    failover: {
      synopsis:
        "CLUSTER/POOL[/NAMESPACE]/IMAGE --from CLUSTER[/POOL[/NAMESPACE]] --target CLUSTER/POOL[/NAMESPACE]/IMAGE " +
        "[--flatten] [--reason TEXT] [--idempotency-key KEY] [--wait]",
      summary: "make the volume's newest backup at a site a writable volume there, and pause its protection",
      details:
        "The target is an RBD clone of the backup's snapshot (usable in seconds, no data copied); the backup\n" +
        "cannot be deleted until the clone is flattened or removed. Policies protecting the volume are paused\n" +
        "for it (policy resume NAME --volume SPEC resumes it).",
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
    failback: {
      synopsis:
        "CLUSTER/POOL[/NAMESPACE]/IMAGE --from CLUSTER/POOL[/NAMESPACE]/IMAGE [--backup ID] [--idempotency-key KEY] [--wait]",
      summary: "give the original volume the failed-over volume's content (only the changes when possible)",
      details:
        "When the failed-over volume is still a clone of the backup and the original still holds its snapshot\n" +
        "of that backup, the original is rolled back to it and only the changes made since are sent; otherwise\n" +
        "every byte is copied and the job says why. Stop writing to the failed-over volume first.",
      args: [["CLUSTER/POOL[/NAMESPACE]/IMAGE", "the original volume (written over; re-created if gone)"]],
      flags: [
        ["--from CLUSTER/POOL[/NAMESPACE]/IMAGE", "the failed-over volume (volume failover's --target)"],
        ["--backup ID", "the backup it was cloned from (default: found in the catalog)"],
        ["--idempotency-key KEY", "the same key again returns the same job"],
        ["--wait", "follow the job until it ends"],
      ],
      examples: ["volume failback site-a/rbd/vol-1 --from site-b/rbd/vol-1 --wait"],
    },
    flatten: {
      synopsis: "CLUSTER/POOL[/NAMESPACE]/IMAGE [--backup ID] [--idempotency-key KEY] [--wait]",
      summary: "detach a clone (volume failover's or a CLONE restore's target) from its backup",
      details:
        "Copies the backup's data into the clone (a FLATTEN job), after which the backup no longer lists it\n" +
        "and may be deleted. A volume already flattened by hand is dropped from the backup's clones too.",
      args: [["CLUSTER/POOL[/NAMESPACE]/IMAGE", "the clone, on its backup's cluster"]],
      flags: [
        ["--backup ID", "the backup that lists it among its clones (default: found in the catalog)"],
        ["--idempotency-key KEY", "the same key again returns the same job"],
        ["--wait", "follow the job until it ends"],
      ],
      examples: ["volume flatten site-b/rbd/vol-1 --wait"],
    },
  },
};

export function volumeCommand(argv: string[]): Promise<number> {
  return dispatch(volumeHelp, { failover, failback, flatten }, argv);
}
