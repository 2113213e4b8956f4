// The service's grpc-web API from this page's own origin, with the API key the user pasted.
// The key lives in sessionStorage (gone when the tab closes) and travels only in the
// `authorization: Bearer` header of each call, never in a URL or a cookie.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { QueueAdminService } from "./gen/llmjobs/v1/admin_pb.js";
import { BatchService } from "./gen/llmjobs/v1/batches_pb.js";
import { JobService } from "./gen/llmjobs/v1/jobs_pb.js";

const KEY = "llmjobs.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const key = apiKey();
  if (key) req.header.set("authorization", `Bearer ${key}`);
  return await next(req);
};

// Protobuf on the wire: the service refuses grpc-web in JSON.
const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const jobs = createClient(JobService, transport);
export const batches = createClient(BatchService, transport);
export const admin = createClient(QueueAdminService, transport);

/** What the key may do: `operator` sees every queue-wide view and control, `admin` its
 * tenant's failed jobs, `user` its own jobs and batches. */
export type Role = "operator" | "admin" | "user";

/** The key's role, found by calling the least the roles need: no RPC tells a key's role, and
 * the service answers PERMISSION_DENIED to calls above it. */
export async function detectRole(): Promise<Role> {
  try {
    await admin.getSystemHealth({});
    return "operator";
  } catch (e) {
    if (!denied(e)) throw e;
  }
  try {
    await admin.listFailedJobs({ pageSize: 1 });
    return "admin";
  } catch (e) {
    if (!denied(e)) throw e;
  }
  return "user";
}

export function denied(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.PermissionDenied;
}

export function aborted(e: unknown): boolean {
  return (
    (e instanceof ConnectError && e.code === Code.Canceled) ||
    (e instanceof DOMException && e.name === "AbortError")
  );
}

/** A readable line for an error of a call. */
export function describe(e: unknown): string {
  if (e instanceof ConnectError) {
    if (e.code === Code.Unauthenticated) return "The key was refused (unauthenticated).";
    return `${Code[e.code]}: ${e.rawMessage}`;
  }
  return e instanceof Error ? e.message : String(e);
}
