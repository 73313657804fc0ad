// The key's jobs, newest first, a page at a time (cursor paging), each with a status badge; a
// click opens the job.

import { Api, describeError } from "./api";
import { byId, el } from "./dom";
import type { Job } from "./types";

const PAGE_SIZE = 10;

export class JobList {
  private readonly list = byId<HTMLUListElement>("job-list");
  private readonly more = byId<HTMLButtonElement>("more-jobs");
  private readonly note = byId("jobs-note");
  private cursor: string | null = null;
  // jobs deleted from this page: an active job's record stays until it has stopped (DELETE's 202)
  private readonly deleted = new Set<string>();

  constructor(
    private readonly getApi: () => Api | null,
    private readonly onOpen: (id: string) => void,
  ) {
    this.more.addEventListener("click", () => void this.load(false));
    byId("refresh-jobs").addEventListener("click", () => void this.load(true));
  }

  /** Load the first page (`fresh`) or the next one. */
  async load(fresh = true): Promise<void> {
    const api = this.getApi();
    if (!api) {
      this.list.replaceChildren();
      this.more.hidden = true;
      return;
    }
    if (fresh) this.cursor = null;
    try {
      const page = await api.listJobs(this.cursor, PAGE_SIZE);
      const items = page.items.filter((job) => !this.deleted.has(job.id)).map((job) => this.item(job));
      if (fresh) this.list.replaceChildren(...items);
      else this.list.append(...items);
      this.cursor = page.next_cursor;
      this.more.hidden = page.next_cursor === null;
      this.note.textContent = this.list.childElementCount === 0 ? "No jobs yet." : "";
    } catch (err) {
      this.note.textContent = describeError(err);
    }
  }

  /** Drop a deleted job from the list, now and on later loads. */
  forget(id: string): void {
    this.deleted.add(id);
    this.list.querySelector(`[data-job-id="${CSS.escape(id)}"]`)?.closest("li")?.remove();
    if (this.list.childElementCount === 0) this.note.textContent = "No jobs yet.";
  }

  private item(job: Job): HTMLLIElement {
    const params = job.params ?? job.settings ?? {};
    const prompt = typeof params.prompt === "string" ? params.prompt : job.id;
    const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
    const button = el("button", { type: "button", class: "job-item", "data-job-id": job.id },
      el("span", { class: `badge badge-${job.status}` }, job.status),
      el("span", { class: "job-item-prompt" }, prompt),
      el("time", { datetime: job.created_at ?? "" }, when));
    button.addEventListener("click", () => this.onOpen(job.id));
    return el("li", {}, button);
  }
}
