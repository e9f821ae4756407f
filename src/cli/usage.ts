/** The `rbdbackup` usage text: commands, global flags, environment and exit codes. */

export const usage = `usage: rbdbackup <command> [options]

daemons:
  agent --config FILE      run the agent daemon for one Ceph cluster (see deploy/examples/agent.json)
  coordinator [options]    run the coordinator (see rbdbackup coordinator --help)

backups:
  backup create --volume CLUSTER/POOL[/NAMESPACE]/IMAGE --to CLUSTER[/POOL[/NAMESPACE]]
                [--mode auto|full|incremental] [--volume-id ID] [--meta KEY=VALUE]...
                [--idempotency-key KEY] [--max-snapshots N] [--wait]
      queue a backup of a volume into a pool of a cluster (no pool: that cluster's default backup pool)
  backup list [--cluster C] [--pool P] [--image I] [--volume-id ID] [--location CLUSTER]
              [--status creating|available|failed|deleting|deleted] [--limit N] [--page-token T] [--all]
      backups, newest first (default: every status but deleted; one page of --limit, 1..1000; --all: every page)
  backup show BACKUP_ID
  backup delete BACKUP_ID [--idempotency-key KEY] [--wait]
  backup restore BACKUP_ID --target CLUSTER/POOL[/NAMESPACE]/IMAGE [--mode new|original]
                 [--idempotency-key KEY] [--wait]
      new (default): the target must not exist; original: over an existing volume, every byte rewritten
  backup snapshots CLUSTER/POOL[/NAMESPACE]/IMAGE
      backup snapshots present on a volume

jobs:
  job list [--state queued|running|succeeded|failed|cancelled] [--kind backup|restore|delete]
           [--backup BACKUP_ID] [--limit N] [--page-token T] [--all]
  job show JOB_ID
  job watch JOB_ID         follow a job to its end (Ctrl-C stops watching; the job goes on)
  job cancel JOB_ID

agents and clusters:
  agent list               agents known to the coordinator, connected or not
  cluster check CLUSTER [--pool POOL]
      prerequisites of a cluster as its agent sees them (exit code 1 when one is not met)

records (moving a backup to another coordinator):
  record export BACKUP_ID [--out FILE]     the backup's record as JSON (stdout without --out)
  record import FILE                       add an exported record to this coordinator ("-": stdin)

help                       this text

global flags (every command above but agent --config and coordinator):
  --coordinator HOST:PORT  the coordinator's API (env RBDBACKUP_COORDINATOR; default 127.0.0.1:7300)
  --ca FILE                PEM of the CA that signs the coordinator's certificate (env RBDBACKUP_TLS_CA)
  --cert FILE --key FILE   client certificate and key for mutual TLS (env RBDBACKUP_TLS_CERT, RBDBACKUP_TLS_KEY);
                           without them, only --ca: the server is verified and the bearer token authenticates
  --token-file FILE        file holding the bearer token (env RBDBACKUP_TOKEN holds the token itself),
                           sent as "authorization: Bearer <token>"
  --insecure               plaintext, no TLS (tests only)
  --timeout SECONDS        deadline of each call (default 30; watching has none)
  --json                   machine-readable output on stdout: the API's JSON of the answer (lists: one
                           document with the array and nextPageToken); job watch and --wait: one JobEvent
                           per line
  -h, --help               this text

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
