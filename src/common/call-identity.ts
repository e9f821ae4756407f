/**
 * Who is calling a grpc-js server, and refusing a call after its request was read (issue 12). Both
 * daemons authorize in a grpc-js server interceptor (it sees the TLS peer, which nice-grpc handlers do
 * not): the coordinator (src/coordinator/auth.ts) and the agents' AgentService (agents/agent/authz.ts).
 *
 * - callerIdentity / peerCertificate: the verified client certificate of the call, and the identity
 *   it names (src/common/identity.ts); null/undefined when there is none.
 * - refusalListener: a refused call is not answered at once but after its first request message has
 *   been read (deserialized, never handed to a handler), so the audit line can name what the request
 *   was about; a call that half-closes without a message, or sends none within REQUEST_WAIT_MS, is
 *   refused with what is known (no target). Nothing of the request reaches any handler.
 */
import { Metadata, type ServerInterceptingCallInterface, type ServerListener } from "@grpc/grpc-js";
import { type Identity, identityOfCertificate } from "./identity";

/** How long a refused call's request is waited for before it is refused without a target, ms. */
export const REQUEST_WAIT_MS = 5_000;

/** The DER of a call's verified client certificate; undefined without one. */
export function peerCertificate(call: ServerInterceptingCallInterface): Buffer | undefined {
  return call.getAuthContext()?.sslPeerCertificate?.raw;
}

/** The identity in a call's verified client certificate; null when there is none or it names nobody. */
export function callerIdentity(call: ServerInterceptingCallInterface): Identity | null {
  const raw = peerCertificate(call);
  if (!raw) return null;
  try {
    return identityOfCertificate(raw);
  } catch {
    return null;
  }
}

export interface Refusal {
  code: number;
  details: string;
}

/**
 * Refuses `call` once its first request message is read: `refuse(request)` (request undefined when
 * none came) audits and returns the status to send. Call from onReceiveMetadata instead of passing the
 * metadata on; the interceptor's listener must include refusalListener(call).
 */
export function refuseAfterRequest(call: ServerInterceptingCallInterface, refuse: (request: unknown) => Refusal): void {
  let done = false;
  const finish = (request: unknown) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    const r = refuse(request);
    call.sendStatus({ code: r.code, details: r.details, metadata: new Metadata() });
  };
  const timer = setTimeout(() => finish(undefined), REQUEST_WAIT_MS);
  timer.unref?.();
  pending.set(call, finish);
  call.startRead();
}

/** Calls refused, waiting for their request: the listener below completes them. */
const pending = new WeakMap<ServerInterceptingCallInterface, (request: unknown) => void>();

/**
 * The listener parts an interceptor adds so refuseAfterRequest sees the request: its first message,
 * or its half-close without one. Calls that are not being refused pass through.
 */
export function refusalListener(call: ServerInterceptingCallInterface): Partial<ServerListener> {
  return {
    onReceiveMessage: (message, next) => {
      const finish = pending.get(call);
      if (!finish) return next(message);
      pending.delete(call);
      finish(message);
    },
    onReceiveHalfClose: (next) => {
      const finish = pending.get(call);
      if (!finish) return next();
      pending.delete(call);
      finish(undefined);
    },
  };
}
