/**
 * DeleteBackup's guard for CLONE restores: a backup whose `clones` lists volumes that still read
 * through to its snapshot is not deleted (FAILED_PRECONDITION naming them). A listed clone that no
 * longer exists (removed outside rbdbackup) is dropped from the list first, asked of an agent of its
 * cluster; when no agent can answer, the clone counts as present. The agent checks librbd's children
 * listing again before it removes anything, so a stale catalog cannot delete a parent.
 */

import { Status } from "nice-grpc-common";
import { failedPrecondition, statusOf } from "../../common/errors";
import type { VolumeRef } from "../../gen/rbdbackup/v1/common";
import { type Backup, volumeLabel } from "../model";
import type { ApiDeps } from "./deps";
import { probe } from "./probes";

/** Whether the clone still exists (true when no agent of its cluster can tell). */
async function stillThere(deps: ApiDeps, c: VolumeRef, signal: AbortSignal): Promise<boolean> {
  try {
    const p = await probe(deps.sessions, c.cluster, { pools: [], image: c }, signal, "clone");
    return p.imageExists;
  } catch (e) {
    if (statusOf(e) === Status.NOT_FOUND) return false; // its pool or namespace is gone
    deps.log.warn("could not check a clone of a backup; counting it as present", { clone: volumeLabel(c), err: e });
    return true;
  }
}

/** FAILED_PRECONDITION naming the clones that depend on `b`; drops listed clones that are gone. */
export async function refuseWhileCloned(deps: ApiDeps, b: Backup, signal?: AbortSignal): Promise<void> {
  if (b.clones.length === 0) return;
  const s = signal ?? new AbortController().signal;
  const present: VolumeRef[] = [];
  for (const c of b.clones) if (await stillThere(deps, c, s)) present.push(c);
  if (present.length !== b.clones.length) {
    const fresh = deps.catalog.getBackup(b.id);
    if (fresh) {
      const kept = new Set(present.map(volumeLabel));
      const gone = new Set(b.clones.map(volumeLabel).filter((l) => !kept.has(l)));
      fresh.clones = fresh.clones.filter((c) => !gone.has(volumeLabel(c)));
      deps.catalog.updateBackup(fresh);
      b.clones = fresh.clones;
    }
  }
  if (present.length === 0) return;
  throw failedPrecondition(
    `backup ${b.id} has clones that depend on its snapshot: ${present.map(volumeLabel).join(", ")}; ` +
      "flatten them (a CLONE restore with flatten does it) or remove them first",
  );
}
