// One job, live: status badge, stage, progress bar, ETA, queue position, previews as they arrive,
// cancel, delete; when it succeeds, the mesh in the 3D viewer, the turntable video and a download link for
// every artifact. Progress comes from the job's event stream; the queue position (which moves
// when other jobs start, without an event of this job) is polled while the job is queued.

import { Api, describeError } from "./api";
import { byId, el, formatBytes, formatSeconds } from "./dom";
import { JobStream } from "./sse";
import { saveOpenJob } from "./storage";
import { TERMINAL, type Artifact, type Job, type ServerEvent } from "./types";
import { Viewer } from "./viewer";

const QUEUE_POLL_MS = 2000;
const MAX_PREVIEWS = 6;

export class JobView {
  private readonly section = byId("job");
  private readonly viewer = new Viewer(byId("viewer"));
  private job: Job | null = null;
  private stream: JobStream | null = null;
  private queuePoll = 0;
  private artifactsBusy = false;
  private artifactsAgain = false;
  private opening = 0;

  constructor(
    private readonly getApi: () => Api | null,
    private readonly onFinished: (job: Job) => void,
    private readonly onDeleted: (id: string) => void,
  ) {
    byId<HTMLButtonElement>("cancel").addEventListener("click", () => void this.cancel());
    byId<HTMLButtonElement>("delete-job").addEventListener("click", () => void this.remove());
  }

  get openJobId(): string | null {
    return this.job?.id ?? null;
  }

  /** Show job `id` and follow its events from `lastEventId` (null: from its first event);
   * `reveal` scrolls the job into view (on phones it sits above the form). */
  async open(id: string, lastEventId: string | null = null, reveal = false): Promise<void> {
    const api = this.getApi();
    if (!api) return;
    this.close();
    const opening = ++this.opening;
    this.section.hidden = false;
    byId("job-id").textContent = id;
    this.setNote("");
    const top = this.section.getBoundingClientRect().top;
    if (reveal && (top < 0 || top > window.innerHeight / 2)) this.section.scrollIntoView({ block: "start" });
    let job: Job;
    try {
      job = await api.job(id);
    } catch (err) {
      if (opening !== this.opening) return;
      this.setNote(describeError(err), true);
      saveOpenJob(null);
      return;
    }
    if (opening !== this.opening) return; // another job was opened meanwhile
    this.job = job;
    saveOpenJob({ id, lastEventId });
    this.render();
    if (TERMINAL.has(job.status)) {
      await this.showResult();
      return;
    }
    this.follow(api, id, lastEventId);
  }

  /** Stop following the open job and clear its result (previews, downloads, video, mesh). */
  close(): void {
    this.stream?.stop();
    this.stream = null;
    window.clearInterval(this.queuePoll);
    this.queuePoll = 0;
    this.job = null;
    this.viewer.clear();
    byId("previews").replaceChildren();
    byId("downloads").replaceChildren();
    byId("result").hidden = true;
    const video = byId<HTMLVideoElement>("video");
    video.removeAttribute("src");
    video.removeAttribute("poster");
    video.load();
  }

  private follow(api: Api, id: string, lastEventId: string | null): void {
    const stream = new JobStream(api, id, lastEventId, {
      onEvent: (ev) => this.onEvent(ev, stream),
      onTrouble: (err, retryInS) =>
        this.setNote(retryInS === null ? describeError(err) : `${describeError(err)} Reconnecting in ${retryInS} s…`, true),
      onConnected: () => this.setNote(""),
    });
    this.stream = stream;
    void stream.run();
  }

  private onEvent(ev: ServerEvent, stream: JobStream): void {
    if (!this.job || stream !== this.stream) return;
    const d = ev.data;
    if (ev.event === "state" || ev.event === "done") {
      Object.assign(this.job, d);
      if (ev.event === "state" && typeof d.total === "number") this.job.total_steps = d.total;
    } else if (ev.event === "progress") {
      this.job.step = d.step as number;
      this.job.total_steps = d.total as number;
      this.job.progress = d.progress as number;
      this.job.eta_s = d.eta_s as number | null;
    } else if (ev.event === "preview") {
      void this.refreshArtifacts();
    }
    if (ev.id) saveOpenJob({ id: this.job.id, lastEventId: ev.id });
    this.render();
    if (ev.event === "done") {
      this.stream = null;
      void this.showResult();
      this.onFinished(this.job);
    }
  }

  private render(): void {
    const job = this.job;
    if (!job) return;
    const badge = byId("job-status");
    badge.textContent = job.status;
    badge.className = `badge badge-${job.status}`;
    const params = job.params ?? job.settings ?? {};
    byId("job-prompt").textContent = typeof params.prompt === "string" ? `“${params.prompt}”` : "";
    byId("job-stage").textContent = (job.stage ?? job.status).replace(/_/g, " ");
    const progress = job.status === "succeeded" ? 100 : job.progress ?? 0;
    const bar = byId<HTMLProgressElement>("job-progress");
    bar.value = progress;
    bar.setAttribute("aria-valuetext", `${Math.round(progress)}%`);
    const parts = [`${Math.round(progress)}%`];
    if (job.total_steps) parts.push(`step ${job.step ?? 0} / ${job.total_steps}`);
    if (job.status === "running" && typeof job.eta_s === "number") parts.push(`about ${formatSeconds(job.eta_s)} left`);
    if (job.status === "queued" && typeof job.queue_position === "number") {
      parts.push(job.queue_position === 0 ? "next in the queue" : `${job.queue_position} ahead in the queue`);
    }
    byId("job-progress-text").textContent = parts.join(" · ");
    byId<HTMLButtonElement>("cancel").hidden = TERMINAL.has(job.status);
    const error = byId("job-error");
    error.hidden = !job.error && !(job.warnings?.length);
    error.textContent = [job.error ? `${job.error.message} (${job.error.code})` : "", ...(job.warnings ?? [])]
      .filter(Boolean).join(" ");
    this.pollQueue(job.status === "queued");
  }

  private pollQueue(on: boolean): void {
    if (on && !this.queuePoll) {
      this.queuePoll = window.setInterval(() => void this.refreshJob(), QUEUE_POLL_MS);
    } else if (!on && this.queuePoll) {
      window.clearInterval(this.queuePoll);
      this.queuePoll = 0;
    }
  }

  private async refreshJob(): Promise<void> {
    const api = this.getApi();
    const id = this.job?.id;
    if (!api || !id) return;
    try {
      const fresh = await api.job(id);
      if (this.job?.id === id) {
        this.job = fresh;
        this.render();
      }
    } catch {
      // the event stream reports connection trouble; a missed poll changes nothing
    }
  }

  private async cancel(): Promise<void> {
    const api = this.getApi();
    if (!api || !this.job) return;
    const button = byId<HTMLButtonElement>("cancel");
    button.disabled = true;
    try {
      Object.assign(this.job, await api.cancel(this.job.id));
      this.setNote(this.job.status === "canceled" ? "" : "Cancel requested; the job stops at its next check.");
      this.render();
    } catch (err) {
      this.setNote(describeError(err), true);
    } finally {
      button.disabled = false;
    }
  }

  /** Delete the open job (files and record; an active job is canceled first) after a confirmation. */
  private async remove(): Promise<void> {
    const api = this.getApi();
    const id = this.job?.id;
    if (!api || !id) return;
    if (!window.confirm(`Delete job ${id} and all its files? This cannot be undone.`)) return;
    const button = byId<HTMLButtonElement>("delete-job");
    button.disabled = true;
    // stop following the job first, and let a listing already on its way finish: nothing of the
    // page asks for the job once it is gone
    this.close();
    while (this.artifactsBusy) await new Promise((done) => window.setTimeout(done, 50));
    try {
      await api.deleteJob(id);
      saveOpenJob(null);
      this.section.hidden = true;
      this.onDeleted(id);
    } catch (err) {
      await this.open(id);
      this.setNote(describeError(err), true);
    } finally {
      button.disabled = false;
    }
  }

  /** Re-list the artifacts (one call at a time; a request during a call runs once after it). */
  private async refreshArtifacts(): Promise<Artifact[]> {
    const api = this.getApi();
    const id = this.job?.id;
    if (!api || !id) return [];
    if (this.artifactsBusy) {
      this.artifactsAgain = true;
      return [];
    }
    this.artifactsBusy = true;
    try {
      const list = (await api.artifacts(id)).artifacts;
      if (this.job?.id === id) this.showPreviews(list);
      return list;
    } catch (err) {
      this.setNote(describeError(err), true);
      return [];
    } finally {
      this.artifactsBusy = false;
      if (this.artifactsAgain) {
        this.artifactsAgain = false;
        void this.refreshArtifacts();
      }
    }
  }

  private showPreviews(list: Artifact[]): void {
    const previews = list.filter((a) => a.kind === "preview" || a.name.startsWith("previews/")).slice(-MAX_PREVIEWS);
    byId("previews").replaceChildren(
      ...previews.map((a) => el("img", { src: a.url, alt: `preview ${a.name.replace(/^previews\//, "")}`, width: "96", height: "96" })),
    );
  }

  private async showResult(): Promise<void> {
    const job = this.job;
    if (!job) return;
    const list = await this.refreshArtifacts();
    if (this.job !== job) return;
    byId("downloads").replaceChildren(
      ...list.filter((a) => !a.name.startsWith("previews/")).map((a) =>
        el("li", {},
          el("a", { href: a.url, download: a.name.split("/").pop() ?? a.name, "data-name": a.name }, a.name),
          el("span", { class: "size" }, ` ${formatBytes(a.size)}`))),
    );
    const byName = new Map(list.map((a) => [a.name, a]));
    const video = byId<HTMLVideoElement>("video");
    const mp4 = byName.get("turntable.mp4") ?? list.find((a) => a.kind === "video");
    const poster = byName.get("thumbnail.png") ?? list.find((a) => a.kind === "thumbnail");
    video.hidden = !mp4;
    if (poster) video.poster = poster.url;
    if (mp4) video.src = mp4.url;
    byId("result").hidden = list.length === 0;
    const glb = byName.get("mesh.glb") ?? list.find((a) => a.name.endsWith(".glb"));
    if (glb) await this.viewer.load(glb.url);
    else if (job.status === "succeeded") this.setNote("This job has no GLB mesh to show.");
  }

  private setNote(text: string, isError = false): void {
    const note = byId("job-note");
    note.textContent = text;
    note.hidden = text === "";
    note.classList.toggle("error", isError);
  }
}
