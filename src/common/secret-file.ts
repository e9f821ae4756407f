/**
 * Files that hold secrets — a daemon's TLS private key (the coordinator's also signs every capability),
 * the coordinator's API tokens — must not be open to other users of the host. As sshd and PostgreSQL
 * do with their keys, a daemon refuses to start with one that other users may read or write, or that its
 * group may write: allowed are 0600 and 0640 (a group the service runs as may read it) or narrower.
 * (Kubernetes mounts secrets 0644 unless told: set the volume's `defaultMode: 0400`, or 0440 with the
 * pod's fsGroup; Docker secrets are 0444 unless their `mode` says otherwise.)
 */
import { statSync } from "node:fs";

/** Throws naming `file` and what to run when its mode lets others at it; a file not there is left to its reader. */
export function checkSecretFile(file: string, what: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return; // not there or not readable: the code that reads it says so, naming it
  }
  if ((mode & 0o037) === 0) return;
  const who = [
    mode & 0o007 ? "other users have access" : "",
    mode & 0o020 ? "its group may write it" : "",
    mode & 0o010 ? "its group may execute it" : "",
  ]
    .filter(Boolean)
    .join(", ");
  throw new Error(
    `the ${what} ${file} has mode 0${mode.toString(8)} (${who}): it holds a secret — run \`chmod 600 ${file}\` (or 640 with the group the service runs as; in Kubernetes, the secret volume's defaultMode 0400)`,
  );
}
