/**
 * The version every part reports (rbdbackup_build_info, agent registration and ListAgents,
 * GetCoordinatorStatus, the daemons' start log): the package's version (kept equal to package.json's),
 * then the build's commit date and commit, "0.1.0+2026-12-07.8c4c8a0c1d2e" — written at build by
 * deploy/build-info.sh into dist/build-info.json. Without that file (a bare `tsc`), "+unknown". The
 * date orders builds: the README's upgrade rules name the builds they concern by it.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

export const PACKAGE_VERSION = "0.1.0";

/** "<package version>+<commit date>.<commit>" from build-info.json at the top of dist/, or "+unknown". */
export function buildVersion(file = path.join(__dirname, "../../build-info.json")): string {
  try {
    const b = JSON.parse(readFileSync(file, "utf8")) as { commit?: unknown; date?: unknown };
    const ok = (v: unknown) => typeof v === "string" && /^[A-Za-z0-9-]{1,40}$/.test(v);
    if (ok(b.commit) && ok(b.date)) return `${PACKAGE_VERSION}+${b.date}.${b.commit}`;
  } catch {
    // No build-info.json (or not readable): said as unknown.
  }
  return `${PACKAGE_VERSION}+unknown`;
}

export const VERSION = buildVersion();
