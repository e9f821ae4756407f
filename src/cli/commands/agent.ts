/**
 * `rbdbackup agent list`: ListAgents; `rbdbackup agent forget CLUSTER/AGENT_ID`: ForgetAgent. (`rbdbackup
 * agent --config FILE`, the daemon, is main.ts's.)
 */
import { AgentStatus } from "../../gen/rbdbackup/v1/backup_service";
import { parseFlags, positionals, UsageError } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { agentTable } from "../format";
import type { NounHelp } from "../help";
import { print, printJson } from "../output";

async function list(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  positionals("agent list", pos, []);
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.listAgents({}, o));
    if (values.json) printJson({ agents: r.agents.map((a) => AgentStatus.toJSON(a)) });
    else print(agentTable(r.agents));
    return ExitCode.Ok;
  });
}

async function forget(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [spec = ""] = positionals("agent forget", pos, ["CLUSTER/AGENT_ID"]);
  const [cluster = "", agentId = "", ...extra] = spec.split("/");
  if (!cluster || !agentId || extra.length > 0)
    throw new UsageError(`agent forget: "${spec}" is not CLUSTER/AGENT_ID (agent list shows both)`);
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.forgetAgent({ cluster, agentId }, o));
    if (values.json) printJson({ agent: r.agent ? AgentStatus.toJSON(r.agent) : null });
    else print(`forgot agent ${agentId} of cluster ${cluster}`);
    return ExitCode.Ok;
  });
}

export const agentHelp: NounHelp = {
  noun: "agent",
  summary: "agents",
  verbs: {
    list: {
      synopsis: "",
      summary: "agents known to the coordinator, connected or not",
      examples: ["agent list", "agent list --json"],
    },
    forget: {
      synopsis: "CLUSTER/AGENT_ID",
      summary:
        "remove a retired agent from the catalog (role admin; stop it first): its id may then serve another cluster",
      args: [["CLUSTER/AGENT_ID", "the agent's cluster and id, as agent list shows them"]],
      examples: ["agent forget site-a/agent-old"],
    },
  },
};

export function agentClientCommand(argv: string[]): Promise<number> {
  return dispatch(agentHelp, { list, forget }, argv);
}
