/**
 * Protection policies on the public API (CreatePolicy … ListVolumeProtection). Placeholder while the
 * policy store and runner are built: every call answers UNIMPLEMENTED.
 */
import { ServerError, Status } from "nice-grpc-common";
import type { BackupServiceImplementation } from "../../gen/rbdbackup/v1/backup_service";
import type { ApiDeps } from "./deps";

type PolicyMethods = Pick<
  BackupServiceImplementation,
  | "createPolicy"
  | "updatePolicy"
  | "getPolicy"
  | "listPolicies"
  | "deletePolicy"
  | "pausePolicy"
  | "resumePolicy"
  | "runPolicyNow"
  | "getVolumeProtection"
  | "listVolumeProtection"
>;

export function policyMethods(_deps: ApiDeps): PolicyMethods {
  const no = async (): Promise<never> => {
    throw new ServerError(Status.UNIMPLEMENTED, "protection policies are not available in this build");
  };
  return {
    createPolicy: no,
    updatePolicy: no,
    getPolicy: no,
    listPolicies: no,
    deletePolicy: no,
    pausePolicy: no,
    resumePolicy: no,
    runPolicyNow: no,
    getVolumeProtection: no,
    listVolumeProtection: no,
  };
}
