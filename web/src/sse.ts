// A job's server-sent events read with fetch (EventSource cannot send the Authorization header):
// parses the text/event-stream format, remembers the last event id and reconnects with
// Last-Event-ID until the job's "done" event or until stopped.

import { Api, ApiError } from "./api";
import type { ServerEvent } from "./types";

export interface StreamHandlers {
  onEvent(ev: ServerEvent): void;
  /** Connection trouble: `retryInS` seconds until the next try, or null when giving up. */
  onTrouble(err: unknown, retryInS: number | null): void;
  onConnected(): void;
}

const MAX_BACKOFF_MS = 15_000;

/** Split an event stream's text into events; returns the events and the unfinished tail. */
export function parseEvents(buffer: string): { events: ServerEvent[]; rest: string; retryMs: number | null } {
  const events: ServerEvent[] = [];
  let retryMs: number | null = null;
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    let id = "";
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (data.length === 0) continue;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(data.join("\n")) as Record<string, unknown>;
    } catch {
      parsed = { text: data.join("\n") };
    }
    events.push({ id, event, data: parsed });
  }
  return { events, rest, retryMs };
}

/** Follows one job's events until "done" or `stop()`. */
export class JobStream {
  private readonly abort = new AbortController();
  private retryMs = 3000;
  lastEventId: string | null;

  constructor(
    private readonly api: Api,
    private readonly jobId: string,
    lastEventId: string | null,
    private readonly handlers: StreamHandlers,
  ) {
    this.lastEventId = lastEventId;
  }

  stop(): void {
    this.abort.abort();
  }

  get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  /** Runs until the job is done, the stream is stopped, or the service refuses it (401/404). */
  async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const finished = await this.readOnce();
        if (finished || this.stopped) return;
        failures = 0;
        await this.sleep(this.retryMs);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && (err.status === 401 || err.status === 403 || err.status === 404)) {
          this.handlers.onTrouble(err, null);
          return;
        }
        failures += 1;
        const wait = Math.min(MAX_BACKOFF_MS, this.retryMs * 2 ** Math.min(failures - 1, 3));
        this.handlers.onTrouble(err, Math.round(wait / 1000));
        await this.sleep(wait);
      }
    }
  }

  /** One connection; true when the job's "done" event arrived. */
  private async readOnce(): Promise<boolean> {
    const res = await this.api.events(this.jobId, this.lastEventId, this.abort.signal);
    this.handlers.onConnected();
    if (!res.body) throw new ApiError(0, "Network error", "the event stream has no body");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        const parsed = parseEvents(buffer + value);
        buffer = parsed.rest;
        if (parsed.retryMs !== null) this.retryMs = parsed.retryMs;
        for (const ev of parsed.events) {
          if (ev.id) this.lastEventId = ev.id;
          this.handlers.onEvent(ev);
          if (ev.event === "done") return true;
        }
      }
    } catch (err) {
      if (this.stopped) return true;
      throw new ApiError(0, "Network error", `the event stream broke: ${String(err)}`);
    } finally {
      reader.cancel().catch(() => undefined); // close the connection whatever ended the loop
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.abort.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
