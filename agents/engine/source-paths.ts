/**
 * Which files and block devices a backup may read as a path source: only those under the agent's
 * `sourcePaths` (config; [] by default, which refuses every path source). A path is judged twice —
 * as written (after path.resolve, so ".." cannot climb out) and as what it really is (realpath, so a
 * symlink inside the allowlist cannot point outside it) — and the real path is what gets read.
 */
import { realpath } from "node:fs/promises";
import path from "node:path";
import { AppError, notFound, Status } from "../../src/common/errors";

const under = (p: string, dir: string): boolean => p === dir || p.startsWith(dir.endsWith("/") ? dir : `${dir}/`);

function refused(requested: string, allow: readonly string[]): AppError {
  return new AppError(
    Status.PERMISSION_DENIED,
    allow.length === 0
      ? `path sources are disabled on this agent: ${requested} is not under its sourcePaths (config field sourcePaths is empty)`
      : `source path ${requested} is outside this agent's sourcePaths (config field sourcePaths: ${allow.join(", ")})`,
  );
}

async function real(p: string): Promise<string | null> {
  try {
    return await realpath(p);
  } catch {
    return null;
  }
}

/**
 * The real path of `requested` when it lies under one of `allow` (as written and as resolved);
 * PERMISSION_DENIED naming the config field otherwise; NOT_FOUND when it is allowed but missing.
 */
export async function allowedSourcePath(requested: string, allow: readonly string[]): Promise<string> {
  const resolved = path.resolve(requested);
  const dirs = allow.map((a) => path.resolve(a));
  if (!dirs.some((d) => under(resolved, d))) throw refused(requested, allow);
  const r = await real(resolved);
  if (r === null) throw notFound(`source path ${requested} not found on this host`);
  const realDirs = (await Promise.all(dirs.map(real))).filter((d): d is string => d !== null);
  if (!realDirs.some((d) => under(r, d))) throw refused(requested, allow);
  return r;
}
