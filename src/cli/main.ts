#!/usr/bin/env node
/**
 * The `rbdbackup` command. At this stage: `rbdbackup agent --config agent.json` starts the agent
 * daemon; the coordinator and the client verbs come with the coordinator.
 * Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
 */
import { agentMain } from "../../agents/agent/main";

const usage = `usage: rbdbackup <command> [options]

commands:
  agent --config FILE     run the agent daemon for one Ceph cluster (see deploy/examples/agent.json)
  help                    this text
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "agent":
      return agentMain(rest);
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return 0;
    default:
      process.stderr.write(cmd ? `unknown command "${cmd}"\n${usage}` : usage);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`rbdbackup: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  },
);
