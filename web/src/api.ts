// The service's HTTP API as the page uses it: bearer auth, problem+json errors turned into
// ApiError, and one sentence a person can act on for each kind of failure.

import type { ArtifactList, Job, JobPage, Model } from "./types";

export interface FieldError {
  field: string;
  message: string;
}

/** A failed call: `status` 0 means the service could not be reached at all. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly errors: FieldError[] = [],
    readonly retryAfterS: number | null = null,
  ) {
    super(detail || title);
    this.name = "ApiError";
  }

  /** The message of the error about `field` (e.g. "prompt"), if the service named it. */
  fieldMessage(field: string): string | null {
    return this.errors.find((e) => e.field === field)?.message ?? null;
  }
}

/** What to tell the user about an error, whatever threw it. */
export function describeError(err: unknown): string {
  if (!(err instanceof ApiError)) return `Unexpected error: ${String(err)}`;
  const retry = err.retryAfterS !== null ? ` Try again in ${err.retryAfterS} s.` : "";
  switch (true) {
    case err.status === 0:
      return "The service cannot be reached (network error). Check that it is running, then retry.";
    case err.status === 401:
      return `The API key was refused: ${err.detail || err.title} Check the key and enter it again.`;
    case err.status === 429:
      return `Rate limited: ${err.detail || err.title}${retry}`;
    case err.status === 502 || err.status === 503 || err.status === 504:
      return `The service is temporarily unavailable: ${err.detail || err.title}${retry}`;
    case err.status >= 500:
      return `The service failed (${err.status}): ${err.detail || err.title}`;
    default:
      return err.detail || err.title;
  }
}

async function toApiError(res: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await res.json()) as Record<string, unknown>;
  } catch {
    // not JSON (a proxy's error page): the status line is all there is
  }
  const retry = Number.parseInt(res.headers.get("Retry-After") ?? "", 10);
  const errors = Array.isArray(body.errors) ? (body.errors as FieldError[]) : [];
  return new ApiError(
    res.status,
    typeof body.title === "string" ? body.title : res.statusText || `HTTP ${res.status}`,
    typeof body.detail === "string" ? body.detail : "",
    errors,
    Number.isFinite(retry) ? retry : null,
  );
}

/** A client for one API key; every path is relative to the page's origin. */
export class Api {
  constructor(readonly key: string) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { Authorization: `Bearer ${this.key}`, Accept: "application/json", ...extra };
  }

  async request<T>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
    const init: RequestInit = { method, headers: this.headers(extra), cache: "no-store" };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["Content-Type"] = "application/json";
    }
    let res: Response;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "Network error", String(err));
    }
    if (!res.ok) throw await toApiError(res);
    const text = await res.text(); // empty for a 204, and for DELETE's 202
    return (text ? JSON.parse(text) : undefined) as T;
  }

  models(): Promise<{ items: Model[] }> {
    return this.request("GET", "/v1/models");
  }

  createJob(body: Record<string, unknown>, idempotencyKey: string): Promise<Job> {
    return this.request("POST", "/v1/jobs", body, { "Idempotency-Key": idempotencyKey });
  }

  listJobs(cursor: string | null, limit = 10): Promise<JobPage> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.request("GET", `/v1/jobs?${q}`);
  }

  job(id: string): Promise<Job> {
    return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  cancel(id: string): Promise<Job> {
    return this.request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** DELETE the job: an active job is canceled first, then its files and record go (202 or 204). */
  deleteJob(id: string): Promise<unknown> {
    return this.request("DELETE", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  artifacts(id: string): Promise<ArtifactList> {
    return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}/artifacts`);
  }

  /** The raw events response (the caller reads the stream); throws ApiError when refused. */
  async events(id: string, lastEventId: string | null, signal: AbortSignal): Promise<Response> {
    const extra: Record<string, string> = { Accept: "text/event-stream" };
    if (lastEventId) extra["Last-Event-ID"] = lastEventId;
    let res: Response;
    try {
      res = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: this.headers(extra),
        cache: "no-store",
        signal,
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new ApiError(0, "Network error", String(err));
    }
    if (!res.ok) throw await toApiError(res);
    return res;
  }
}
