/** `rbdbackup agent list`: ListAgents. (`rbdbackup agent --config FILE`, the daemon, is main.ts's.) */
import { AgentStatus } from "../../gen/rbdbackup/v1/backup_service";
import { parseFlags, positionals } from "../args";
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

export const agentHelp: NounHelp = {
  noun: "agent",
  summary: "agents",
  verbs: {
    list: {
      synopsis: "",
      summary: "agents known to the coordinator, connected or not",
      examples: ["agent list", "agent list --json"],
    },
  },
};

export function agentClientCommand(argv: string[]): Promise<number> {
  return dispatch(agentHelp, { list }, argv);
}
