/**
 * The `rbdbackup` usage text (`rbdbackup help`): commands, global flags, environment and exit codes.
 * Each client verb's line comes from its own help (commands/*.ts), so a verb is described once.
 */
import { agentHelp } from "./commands/agent";
import { backupHelp } from "./commands/backup";
import { catalogHelp } from "./commands/catalog";
import { clusterHelp } from "./commands/cluster";
import { jobHelp } from "./commands/job";
import { policyHelp } from "./commands/policy";
import { protectionHelp } from "./commands/protection";
import { recordHelp } from "./commands/record";
import { volumeHelp } from "./commands/volume";
import { overviewLines } from "./help";

/** The nouns of the client verbs, in the order `rbdbackup help` shows them. */
export const nouns = [
  backupHelp,
  jobHelp,
  policyHelp,
  protectionHelp,
  agentHelp,
  clusterHelp,
  recordHelp,
  catalogHelp,
  volumeHelp,
];

export const usage = `usage: rbdbackup <command> [options]

daemons:
  agent --config FILE      run the agent daemon for one Ceph cluster (see rbdbackup agent --help)
  coordinator [options]    run the coordinator (see rbdbackup coordinator --help)

${nouns.map(overviewLines).join("\n\n")}

help [COMMAND [VERB]]      this text, or the help of one command (also: rbdbackup COMMAND [VERB] --help)

global flags (every command above but agent --config and coordinator):
  --coordinator HOST:PORT[,HOST:PORT...]
                           the coordinator's API; several = a leader and its standbys, the CLI follows
                           the leader (env RBDBACKUP_COORDINATOR; default 127.0.0.1:7300)
  --ca FILE                PEM of the CA that signs the coordinator's certificate (env RBDBACKUP_TLS_CA)
  --cert FILE --key FILE   client certificate and key for mutual TLS (env RBDBACKUP_TLS_CERT, RBDBACKUP_TLS_KEY);
                           without them, only --ca: the server is verified and the bearer token authenticates
  --token-file FILE        file holding the bearer token (env RBDBACKUP_TOKEN holds the token itself),
                           sent as "authorization: Bearer <token>"
  --insecure               plaintext, no TLS (tests only)
  --timeout SECONDS        deadline of each call, 0.1 to 86400 (default 30; a watch has none: a
                           coordinator gone silent ends it within ~30 s by keepalive)
  --json                   machine-readable output on stdout: the API's JSON of the answer (lists: one
                           document with the array and nextPageToken); job watch and --wait: one JobEvent
                           per line
  -h, --help               this text; after a command: that command's help

--wait and job watch show a live progress bar on stderr on a terminal, else one line on stderr per
state or phase change, then the job's summary on stdout.

exit codes:
  0  success (--wait, job watch: the job SUCCEEDED)
  1  the job ended FAILED (cluster check: a prerequisite is not met; also an unexpected failure of the CLI)
  2  usage error: bad flags or arguments, or an unreadable file named by them
  3  the job ended CANCELLED
  4  the API answered NOT_FOUND
  5  UNAUTHENTICATED or PERMISSION_DENIED
  6  UNAVAILABLE or DEADLINE_EXCEEDED: the coordinator is unreachable or too slow (retryable)
  7  any other API error (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, ...)
  130 interrupted by Ctrl-C while watching (the job goes on)
API errors are printed on stderr as "rbdbackup: <STATUS_NAME>: <details>".
`;
