// What the page keeps in the browser (localStorage): the API key and the open job with the id of
// the last event seen, so a reload reconnects to the job's stream with Last-Event-ID.

const KEY_ITEM = "sjc.apiKey";
const OPEN_JOB_ITEM = "sjc.openJob";

export interface OpenJob {
  id: string;
  lastEventId: string | null;
}

export function loadKey(): string {
  return localStorage.getItem(KEY_ITEM) ?? "";
}

export function saveKey(key: string): void {
  if (key) localStorage.setItem(KEY_ITEM, key);
  else localStorage.removeItem(KEY_ITEM);
}

export function loadOpenJob(): OpenJob | null {
  try {
    const raw = JSON.parse(localStorage.getItem(OPEN_JOB_ITEM) ?? "null") as Partial<OpenJob> | null;
    return raw && typeof raw.id === "string" ? { id: raw.id, lastEventId: raw.lastEventId ?? null } : null;
  } catch {
    return null;
  }
}

export function saveOpenJob(job: OpenJob | null): void {
  if (job) localStorage.setItem(OPEN_JOB_ITEM, JSON.stringify(job));
  else localStorage.removeItem(OPEN_JOB_ITEM);
}
