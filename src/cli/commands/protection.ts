/** `rbdbackup protection list|show`: how well volumes are protected (ListVolumeProtection, GetVolumeProtection). */
import { ProtectionState, VolumeProtection } from "../../gen/rbdbackup/v1/policy";
import { parseChoice, parseFlags, parseIntFlag, parseVolumeSpec, positionals } from "../args";
import { withConnection } from "../connection";
import { dispatch } from "../dispatch";
import { ExitCode } from "../exit-codes";
import { protectionBlock, protectionTable } from "../format-policy";
import type { NounHelp } from "../help";
import { print, printJson } from "../output";
import { listPages } from "../paging";

const states = {
  ok: ProtectionState.PROTECTION_STATE_OK,
  late: ProtectionState.PROTECTION_STATE_LATE,
  failing: ProtectionState.PROTECTION_STATE_FAILING,
  paused: ProtectionState.PROTECTION_STATE_PAUSED,
  pending: ProtectionState.PROTECTION_STATE_PENDING,
};

async function list(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, {
    policy: { type: "string" },
    state: { type: "string" },
    cluster: { type: "string" },
    limit: { type: "string" },
    "page-token": { type: "string" },
    all: { type: "boolean" },
  });
  positionals("protection list", pos, []);
  const filter = {
    policy: values.policy ?? "",
    state: parseChoice(values.state, "state", states) ?? ProtectionState.PROTECTION_STATE_UNSPECIFIED,
    cluster: values.cluster ?? "",
    pageSize: parseIntFlag(values.limit, "limit", 1, 1000) ?? 0,
  };
  return withConnection(values, async (conn) => {
    return listPages(
      values,
      async (pageToken) => {
        const r = await conn.call((o) => conn.client.listVolumeProtection({ ...filter, pageToken }, o));
        return { items: r.volumes, next: r.nextPageToken };
      },
      { field: "volumes", toJSON: (x) => VolumeProtection.toJSON(x), table: protectionTable, noun: "volumes" },
    );
  });
}

async function show(argv: string[]): Promise<number> {
  const { values, positionals: pos } = parseFlags(argv, { policy: { type: "string" } });
  const [spec = ""] = positionals("protection show", pos, ["VOLUME"]);
  const volume = parseVolumeSpec(spec, "VOLUME");
  return withConnection(values, async (conn) => {
    const v = await conn.call((o) => conn.client.getVolumeProtection({ volume, policy: values.policy ?? "" }, o));
    if (values.json) printJson(VolumeProtection.toJSON(v));
    else print(protectionBlock(v));
    return ExitCode.Ok;
  });
}

export const protectionHelp: NounHelp = {
  noun: "protection",
  summary: "volume protection (recovery point age, next run, failures, state)",
  verbs: {
    list: {
      synopsis:
        "[--policy NAME] [--state ok|late|failing|paused|pending] [--cluster C] [--limit N] [--page-token T] [--all]",
      summary: "every volume a policy protects, by policy and volume",
      details: "With --state a page may hold fewer than --limit volumes; --all follows every page.",
      flags: [
        ["--policy NAME", "only this policy's volumes"],
        ["--state STATE", "only volumes in this state: ok, late, failing, paused or pending"],
        ["--cluster C", "only volumes of this cluster"],
        ["--limit N", "volumes per page, 1 to 1000"],
        ["--page-token T", "the page after the one that printed this token"],
        ["--all", "every page"],
      ],
      examples: ["protection list --state late --all", "protection list --policy gold --json"],
    },
    show: {
      synopsis: "CLUSTER/POOL[/NAMESPACE]/IMAGE [--policy NAME]",
      summary: "one volume's protection: state, recovery point age, last backup, next run, failures",
      args: [["VOLUME", "CLUSTER/POOL[/NAMESPACE]/IMAGE"]],
      flags: [["--policy NAME", "the policy, when the volume is in several (one per destination)"]],
      examples: ["protection show site-a/rbd/vm-1"],
    },
  },
};

export function protectionCommand(argv: string[]): Promise<number> {
  return dispatch(protectionHelp, { list, show }, argv);
}
