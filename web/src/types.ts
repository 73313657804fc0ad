// The API's shapes as the page reads them. Only public fields; anything newer is optional, so the
// page keeps working while the service grows (e.g. `target_faces`, a `thumbnail` artifact).

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "canceled";
export const TERMINAL: ReadonlySet<string> = new Set(["succeeded", "failed", "canceled"]);

export interface JobError {
  code: string;
  message: string;
}

export interface Job {
  id: string;
  status: JobStatus;
  stage?: string;
  progress?: number;
  step?: number;
  total_steps?: number;
  eta_s?: number | null;
  queue_position?: number | null;
  attempt?: number;
  error?: JobError | null;
  params?: Record<string, unknown>;
  settings?: Record<string, unknown>;
  created_at?: string;
  finished_at?: string | null;
  warnings?: string[];
}

export interface JobPage {
  items: Job[];
  next_cursor: string | null;
}

export interface Artifact {
  name: string;
  kind?: string;
  size: number;
  content_type?: string;
  url: string;
}

export interface ArtifactList {
  job_id: string;
  status: JobStatus;
  complete: boolean;
  artifacts: Artifact[];
}

export interface Model {
  name: string;
  kind: string;
  description: string;
  default: boolean;
  vocabulary?: Record<string, string[]> | null;
  defaults?: Record<string, unknown>;
}

/** One server-sent event: `id` is the stream id to resume from (empty on a synthetic event). */
export interface ServerEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}
