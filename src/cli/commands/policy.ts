/**
 * `rbdbackup policy create|update|show|list|delete|pause|resume|run`: the protection policy RPCs.
 * create builds the policy from flags (or a JSON file, flags on top); update reads the policy, applies
 * the flags given and writes it back with expected_revision, so a concurrent change is refused (ABORTED)
 * instead of lost.
 */
import { readFileSync } from "node:fs";
import { MAX_RETENTION_COUNT, MAX_SNAPSHOTS } from "../../common/api-limits";
import { BackupMode } from "../../gen/rbdbackup/v1/agent";
import { Policy, type PolicySchedule, type PolicySelector, type RetentionRule } from "../../gen/rbdbackup/v1/policy";
import {
  parseChoice,
  parseFlags,
  parseIntFlag,
  parseLocationSpec,
  parseMeta,
  parseVolumeSpec,
  positionals,
  UsageError,
} from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { volumeSpec } from "../format";
import { policyBlock, policyTable } from "../format-policy";
import type { NounHelp } from "../help";
import { note, print, printJson } from "../output";
import { listPages } from "../paging";
import { parseTransfer, transferFlagHelp, transferFlags } from "../transfer-flags";

const modes = {
  auto: BackupMode.BACKUP_MODE_AUTO,
  full: BackupMode.BACKUP_MODE_FULL,
  incremental: BackupMode.BACKUP_MODE_INCREMENTAL,
};

const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90", "90s", "15m", "6h", "7d" → seconds; undefined when the flag is absent. */
export function parseDuration(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,9})([smhd]?)$/.exec(value.trim());
  const n = m ? Number(m[1]) * (UNIT[m[2] || "s"] ?? 1) : Number.NaN;
  if (!Number.isSafeInteger(n) || n > 0xffffffff) {
    throw new UsageError(`--${flag} must be a duration like 90, 90s, 15m, 6h or 7d, got "${value}"`);
  }
  return n;
}

/** "HH:MM-HH:MM" → a window. */
export function parseWindow(value: string | undefined): { start: string; end: string } | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d\d:\d\d)-(\d\d:\d\d)$/.exec(value.trim());
  if (!m) throw new UsageError(`--window must be HH:MM-HH:MM (local time in --tz), got "${value}"`);
  return { start: m[1] ?? "", end: m[2] ?? "" };
}

const policyFlags = {
  file: { type: "string" },
  description: { type: "string" },
  volume: { type: "string", multiple: true },
  pool: { type: "string" },
  regex: { type: "string" },
  to: { type: "string" },
  every: { type: "string" },
  cron: { type: "string" },
  tz: { type: "string" },
  "start-offset": { type: "string" },
  jitter: { type: "string" },
  window: { type: "string" },
  "keep-last": { type: "string" },
  hourly: { type: "string" },
  daily: { type: "string" },
  weekly: { type: "string" },
  monthly: { type: "string" },
  yearly: { type: "string" },
  "min-age": { type: "string" },
  mode: { type: "string" },
  "max-snapshots": { type: "string" },
  meta: { type: "string", multiple: true },
  paused: { type: "boolean" },
  ...transferFlags,
} as const;

type PolicyValues = ReturnType<typeof parseFlags<typeof policyFlags>>["values"];

function readPolicyFile(file: string): Policy {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file === "-" ? 0 : file, "utf8"));
  } catch (e) {
    throw new UsageError(`cannot read --file ${file}: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UsageError(`--file ${file} is not a policy (a JSON object)`);
  }
  return Policy.fromJSON(json);
}

const count = (v: string | undefined, flag: string) => parseIntFlag(v, flag, 0, MAX_RETENTION_COUNT);

/** The policy with the flags given applied on top of `base` (a flag not given leaves its field). */
export function applyFlags(base: Policy, values: PolicyValues): Policy {
  const p = Policy.fromPartial({
    ...base,
    selector: base.selector ?? {},
    schedule: base.schedule ?? {},
    retention: base.retention ?? {},
  });
  const sel = p.selector as PolicySelector;
  if (values.description !== undefined) p.description = values.description;
  if (values.volume) sel.volumes = values.volume.map((s) => parseVolumeSpec(s, "--volume"));
  if (values.pool !== undefined) {
    const l = values.pool === "" ? { cluster: "", pool: "", namespace: "" } : parseLocationSpec(values.pool, "--pool");
    if (l.cluster && !l.pool) throw new UsageError(`--pool must be CLUSTER/POOL[/NAMESPACE], got "${values.pool}"`);
    Object.assign(sel, l);
  }
  if (values.regex !== undefined) sel.imageRegex = values.regex;
  if (values.to !== undefined) p.destination = parseLocationSpec(values.to, "--to");
  const s = p.schedule as PolicySchedule;
  if (values.every !== undefined && values.cron !== undefined) throw new UsageError("give --every or --cron, not both");
  const every = parseDuration(values.every, "every");
  if (every !== undefined) [s.intervalSeconds, s.cron] = [every, ""];
  if (values.cron !== undefined) [s.intervalSeconds, s.cron] = [0, values.cron];
  if (values.tz !== undefined) s.timeZone = values.tz;
  s.startOffsetSeconds = parseDuration(values["start-offset"], "start-offset") ?? s.startOffsetSeconds;
  s.jitterSeconds = parseDuration(values.jitter, "jitter") ?? s.jitterSeconds;
  if (values.window !== undefined) s.window = values.window === "" ? undefined : parseWindow(values.window);
  const r = p.retention as RetentionRule;
  r.keepLast = count(values["keep-last"], "keep-last") ?? r.keepLast;
  for (const k of ["hourly", "daily", "weekly", "monthly", "yearly"] as const) r[k] = count(values[k], k) ?? r[k];
  r.minAgeSeconds = parseDuration(values["min-age"], "min-age") ?? r.minAgeSeconds;
  p.mode = parseChoice(values.mode, "mode", modes) ?? p.mode;
  p.maxSnapshots = parseIntFlag(values["max-snapshots"], "max-snapshots", 0, MAX_SNAPSHOTS) ?? p.maxSnapshots;
  if (values.meta) p.volumeMetadata = parseMeta(values.meta);
  if (values.paused) p.paused = true;
  p.transfer = parseTransfer(values, p.transfer);
  return p;
}

function printPolicy(p: Policy, json: boolean | undefined): number {
  if (json) printJson(Policy.toJSON(p));
  else print(policyBlock(p));
  return ExitCode.Ok;
}

async function create(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, policyFlags);
  const [name = ""] = positionals("policy create", pos, ["NAME"]);
  const base = values.file !== undefined ? readPolicyFile(values.file) : Policy.fromPartial({});
  const policy = applyFlags({ ...base, name }, values);
  return withConnection(values, async (conn) =>
    printPolicy(await conn.call((o) => conn.client.createPolicy({ policy }, o)), values.json),
  );
}

const updateFlags = { ...policyFlags, "confirm-retention-drop": { type: "boolean" } } as const;

async function update(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, updateFlags);
  const [name = ""] = positionals("policy update", pos, ["NAME"]);
  if (values.paused) throw new UsageError("policy update does not pause: use `rbdbackup policy pause NAME`");
  return withConnection(values, async (conn) => {
    const current = await conn.call((o) => conn.client.getPolicy({ name }, o));
    const base = values.file !== undefined ? readPolicyFile(values.file) : current;
    const policy = applyFlags(
      { ...base, name, paused: values.file !== undefined ? base.paused : current.paused },
      values,
    );
    const confirmRetentionDrop = values["confirm-retention-drop"] === true;
    const updated = await conn.call((o) =>
      conn.client.updatePolicy({ policy, expectedRevision: current.revision, confirmRetentionDrop }, o),
    );
    return printPolicy(updated, values.json);
  });
}

function byName(verb: "show" | "pause" | "resume") {
  return async (argv: string[]): Promise<number> => {
    const { values, positionals: pos } = parseFlags(argv, verb === "resume" ? { volume: { type: "string" } } : {});
    const [name = ""] = positionals(`policy ${verb}`, pos, ["NAME"]);
    const volume = typeof values.volume === "string" ? parseVolumeSpec(values.volume, "--volume") : undefined;
    return withConnection(values, async (conn) => {
      const c = conn.client;
      const p = await conn.call((o) =>
        verb === "show"
          ? c.getPolicy({ name }, o)
          : verb === "pause"
            ? c.pausePolicy({ name }, o)
            : c.resumePolicy({ name, volume }, o),
      );
      return printPolicy(p, values.json);
    });
  };
}

async function list(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    limit: { type: "string" },
    "page-token": { type: "string" },
    all: { type: "boolean" },
  });
  positionals("policy list", pos, []);
  const pageSize = parseIntFlag(values.limit, "limit", 1, 1000) ?? 0;
  return withConnection(values, async (conn) => {
    return listPages(
      values,
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listPolicies({ pageSize, pageToken }, o));
        return { items: r.policies, next: r.nextPageToken };
      },
      { field: "policies", toJSON: (x) => Policy.toJSON(x), table: policyTable, noun: "policies" },
    );
  });
}

async function remove(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {});
  const [name = ""] = positionals("policy delete", pos, ["NAME"]);
  return withConnection(values, async (conn) => {
    await conn.call((o) => conn.client.deletePolicy({ name }, o));
    if (values.json) printJson({});
    else note(`policy ${name} deleted (its backups stay)`);
    return ExitCode.Ok;
  });
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, { volume: { type: "string" } });
  const [name = ""] = positionals("policy run", pos, ["NAME"]);
  const volume = values.volume !== undefined ? parseVolumeSpec(values.volume, "--volume") : undefined;
  return withConnection(values, async (conn) => {
    const r = await conn.call((o) => conn.client.runPolicyNow({ name, volume }, o));
    if (values.json) printJson({ jobIds: r.jobIds, skipped: r.skipped });
    else print(r.jobIds.length ? r.jobIds.join("\n") : "");
    if (!values.json) {
      note(`${r.jobIds.length} backup job(s) queued (rbdbackup job watch JOB_ID follows one)`);
      for (const s of r.skipped) note(`skipped ${volumeSpec(s.volume)}: ${s.reason}`);
    }
    return ExitCode.Ok;
  });
}

const nameArg: [string, string] = ["NAME", "the policy's name (1-63 characters of a-z 0-9 -)"];

const policyFlagHelp: Array<[string, string]> = [
  ["--file FILE", 'start from a policy as JSON (the API\'s Policy; "-": stdin); other flags apply on top'],
  ["--volume SPEC", "protect CLUSTER/POOL[/NAMESPACE]/IMAGE (repeatable; replaces the explicit list)"],
  ["--pool CLUSTER/POOL[/NS]", "protect the images of a pool (with --regex: those whose name matches)"],
  ["--regex RE", "image-name regular expression, anchored, at most 256 characters"],
  ["--to CLUSTER[/POOL[/NS]]", "where the backups go (no pool: the cluster's default backup pool)"],
  ["--every DURATION", "run every 30s, 15m, 6h, 1d, ... (at least the coordinator's minimum, 30 s by default)"],
  ["--cron EXPR", 'or on a 5-field cron expression, e.g. "0 2 * * *"'],
  ["--tz ZONE", "IANA time zone of --cron, --window and the retention's days (default UTC)"],
  ["--start-offset DURATION", "with --every: slots at epoch + offset + k × interval"],
  ["--jitter DURATION", "each volume starts at a stable offset below this after its slot"],
  ["--window HH:MM-HH:MM", "runs start only inside this daily window (may wrap past midnight)"],
  ["--keep-last N", "retention: the newest N backups"],
  ["--hourly/--daily/--weekly/--monthly/--yearly N", "retention: the newest backup of each of the last N periods"],
  ["--min-age DURATION", "retention: never delete a backup younger than this"],
  ["--mode auto|full|incremental", "backup mode (default auto)"],
  ["--max-snapshots N", "backup snapshots to keep on each source volume"],
  ...transferFlagHelp,
  ["--meta KEY=VALUE", "metadata saved with each backup ({cluster} {pool} {namespace} {image} {policy} expand)"],
  ["--description TEXT", "what the policy is for"],
  ["--paused", "create it paused"],
];

export const policyHelp: NounHelp = {
  noun: "policy",
  summary: "protection policies (volumes backed up on a schedule, kept by rules)",
  verbs: {
    create: {
      synopsis:
        "NAME (--volume SPEC... | --pool CLUSTER/POOL [--regex RE]) --to CLUSTER[/POOL] (--every DURATION | --cron EXPR) " +
        "[--keep-last N] [--hourly N] [--daily N] [--weekly N] [--monthly N] [--yearly N] [more flags]",
      summary: "create a policy: what to protect, where to, when, and what to keep",
      details:
        "A volume may be in one policy per destination: an overlap is refused naming both policies (exit code 7).\n" +
        "Retention never deletes the newest backup, one younger than --min-age, or one in use or cloned.",
      args: [nameArg],
      flags: policyFlagHelp,
      examples: [
        "policy create gold --pool site-a/rbd --regex 'vm-.*' --to site-b --every 15m --keep-last 4 --daily 7",
        "policy create db --volume site-a/rbd/db-1 --to site-b/backups --cron '0 2 * * *' --daily 30",
      ],
    },
    update: {
      synopsis: "NAME [flags of create]",
      summary: "change a policy: the flags given replace their fields (refused if it changed meanwhile)",
      args: [nameArg],
      details:
        "A change whose retention would delete backups the policy keeps now (fewer counts, a shorter --min-age,\n" +
        "another --tz, a destination where it made backups before, or a volume added whose backups by this\n" +
        "policy were never judged) is refused, saying how many (exit code 7); --confirm-retention-drop applies\n" +
        "it: retention deletes them at each volume's next successful run (or the one after).",
      flags: [
        ...policyFlagHelp.filter(([f]) => f !== "--paused"),
        ["--confirm-retention-drop", "apply a retention that deletes backups the policy keeps now"],
      ],
      examples: [
        "policy update gold --every 5m",
        "policy update gold --keep-last 2 --confirm-retention-drop",
        "policy update gold --compression zstd --bandwidth-limit 200M",
        "policy update db --file db.policy.json",
      ],
    },
    show: { synopsis: "NAME", summary: "one policy", args: [nameArg], examples: ["policy show gold --json"] },
    list: {
      synopsis: "[--limit N] [--page-token T] [--all]",
      summary: "policies by name (one page of --limit, 1..1000; --all: every page)",
      flags: [
        ["--limit N", "policies per page, 1 to 1000"],
        ["--page-token T", "the page after the one that printed this token"],
        ["--all", "every page"],
      ],
      examples: ["policy list", "policy list --all --json"],
    },
    delete: {
      synopsis: "NAME",
      summary: "delete a policy (its backups stay; delete them with backup delete)",
      args: [nameArg],
      examples: ["policy delete gold"],
    },
    pause: {
      synopsis: "NAME",
      summary: "stop starting scheduled runs (policy run still works)",
      args: [nameArg],
      examples: ["policy pause gold"],
    },
    resume: {
      synopsis: "NAME [--volume SPEC]",
      summary: "start scheduled runs again (with --volume: only that volume's own pause, e.g. after a failover)",
      args: [nameArg],
      flags: [["--volume SPEC", "resume only this volume (paused on its own by volume failover)"]],
      examples: ["policy resume gold", "policy resume gold --volume site-a/rbd/vm-1"],
    },
    run: {
      synopsis: "NAME [--volume SPEC]",
      summary: "back up every volume the policy selects now, outside the schedule; prints the job ids",
      args: [nameArg],
      flags: [["--volume SPEC", "only this volume (one the policy selects)"]],
      examples: ["policy run gold", "policy run gold --volume site-a/rbd/vm-1"],
    },
  },
};

export function policyCommand(argv: string[]): Promise<number> {
  return dispatch(
    policyHelp,
    {
      create,
      update,
      show: byName("show"),
      list,
      delete: remove,
      pause: byName("pause"),
      resume: byName("resume"),
      run,
    },
    argv,
  );
}
