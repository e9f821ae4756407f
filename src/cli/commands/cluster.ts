/** `rbdbackup cluster check CLUSTER [--pool P]`: CheckCluster; exit code 1 when a check fails. */
import { ClusterCheckResponse } from "../../gen/rbdbackup/v1/agent";
import { parseFlags, positionals } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { clusterCheckText } from "../format";
import type { NounHelp } from "../help";
import { print, printJson } from "../output";

async function check(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, { pool: { type: "string" } });
  const [cluster = ""] = positionals("cluster check", pos, ["CLUSTER"]);
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.checkCluster({ cluster, backupPool: values.pool ?? "" }, o));
    if (values.json) printJson({ ok: r.ok, checks: [], ...(ClusterCheckResponse.toJSON(r) as object) });
    else print(clusterCheckText(cluster, r));
    return r.ok ? ExitCode.Ok : ExitCode.JobFailed;
  });
}

export const clusterHelp: NounHelp = {
  noun: "cluster",
  summary: "clusters",
  verbs: {
    check: {
      synopsis: "CLUSTER [--pool POOL]",
      summary: "prerequisites of a cluster as its agent sees them (exit code 1 when one is not met)",
      args: [["CLUSTER", "the cluster's name, as its agent is configured (cluster.name)"]],
      flags: [["--pool POOL", "the backup pool to check (default: the agent's backupPool)"]],
      examples: ["cluster check site-b", "cluster check site-b --pool backups-ssd"],
    },
  },
};

export function clusterCommand(argv: string[]): Promise<number> {
  return dispatch(clusterHelp, { check }, argv);
}
