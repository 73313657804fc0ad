// The "new asset" form: model picker (from GET /v1/models) with the model's words as choices,
// parameters (advanced ones folded), keyboard submit (Enter, or Ctrl/Cmd+Enter anywhere in the
// form), an Idempotency-Key per distinct request, and refused fields' messages shown inline.

import { Api, ApiError, describeError } from "./api";
import { byId, el, randomToken } from "./dom";
import type { Job, Model } from "./types";

/** Inputs named after JobCreate fields; empty means "the model's recommended value". */
const NUMBER_FIELDS = [
  "steps", "seed", "guidance_scale", "target_faces",
  "grid_size", "render_size", "lr", "emptiness_weight", "mesh_threshold", "video_frames", "preview_every",
];

export class JobForm {
  private readonly form = byId<HTMLFormElement>("job-form");
  private readonly model = byId<HTMLSelectElement>("model");
  private readonly prompt = byId<HTMLInputElement>("prompt");
  private readonly submit = byId<HTMLButtonElement>("submit");
  private readonly formError = byId("form-error");
  private models: Model[] = [];
  private api: Api | null = null;
  /** The last request sent and its Idempotency-Key: resending the same body reuses the key. */
  private pending: { body: string; key: string } | null = null;

  constructor(private readonly onCreated: (job: Job) => void) {
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.send();
    });
    this.form.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.model.addEventListener("change", () => this.showModel());
    this.form.addEventListener("input", (ev) => this.clearFieldError((ev.target as HTMLInputElement).name));
  }

  /** Load the models for `api`; throws ApiError (e.g. a refused key). */
  async useApi(api: Api | null): Promise<void> {
    this.api = api;
    this.submit.disabled = api === null;
    if (!api) return;
    this.models = (await api.models()).items;
    this.model.replaceChildren(
      ...this.models.map((m) => el("option", { value: m.name }, m.default ? `${m.name} (default)` : m.name)),
    );
    const chosen = this.models.find((m) => m.default) ?? this.models[0];
    if (chosen) this.model.value = chosen.name;
    this.showModel();
  }

  private current(): Model | undefined {
    return this.models.find((m) => m.name === this.model.value);
  }

  /** The model's description, its words as choice buttons, and its defaults as placeholders. */
  private showModel(): void {
    const model = this.current();
    byId("model-description").textContent = model?.description ?? "";
    const words = byId("vocabulary");
    words.replaceChildren();
    for (const [group, list] of Object.entries(model?.vocabulary ?? {})) {
      const buttons = list.map((word) => {
        const b = el("button", { type: "button", class: "chip", "data-word": word, "data-group": group }, word);
        b.addEventListener("click", () => this.pickWord(group, word));
        return b;
      });
      words.append(el("div", { class: "chips", role: "group", "aria-label": `${group} the model knows` },
        el("span", { class: "chips-label" }, group), ...buttons));
    }
    words.hidden = words.childElementCount === 0;
    this.prompt.placeholder = model?.vocabulary ? "a red sphere" : "a wooden chair";
    const defaults = model?.defaults ?? {};
    for (const name of NUMBER_FIELDS) {
      const input = this.form.elements.namedItem(name) as HTMLInputElement | null;
      if (input) input.placeholder = name in defaults ? String(defaults[name]) : input.dataset.placeholder ?? "";
    }
  }

  /** Put `word` into the prompt in place of the group's current word ("a <colour> <shape>"). */
  private pickWord(group: string, word: string): void {
    const vocab = this.current()?.vocabulary ?? {};
    const groups = Object.keys(vocab);
    const picked: Record<string, string> = {};
    const tokens = this.prompt.value.toLowerCase().match(/[a-z]+/g) ?? [];
    for (const g of groups) picked[g] = tokens.find((t) => vocab[g]?.includes(t)) ?? vocab[g]?.[0] ?? "";
    picked[group] = word;
    this.prompt.value = `a ${groups.map((g) => picked[g]).join(" ")}`;
    this.clearFieldError("prompt");
    this.prompt.focus();
  }

  private body(): Record<string, unknown> {
    const body: Record<string, unknown> = { prompt: this.prompt.value.trim(), model: this.model.value };
    for (const name of NUMBER_FIELDS) {
      const input = this.form.elements.namedItem(name) as HTMLInputElement | null;
      if (input && input.value.trim() !== "") body[name] = Number(input.value);
    }
    return body;
  }

  private async send(): Promise<void> {
    if (!this.api) return;
    this.clearErrors();
    const body = this.body();
    if (!body.prompt) {
      this.showFieldError("prompt", "Type a prompt first.");
      return;
    }
    const text = JSON.stringify(body);
    if (this.pending?.body !== text) this.pending = { body: text, key: randomToken() };
    this.submit.disabled = true;
    this.submit.textContent = "Submitting…";
    try {
      const job = await this.api.createJob(body, this.pending.key);
      this.pending = null;
      this.onCreated(job);
    } catch (err) {
      this.showError(err);
    } finally {
      this.submit.disabled = false;
      this.submit.textContent = "Generate";
    }
  }

  private showError(err: unknown): void {
    const unplaced: string[] = [];
    if (err instanceof ApiError && err.status === 422 && err.errors.length > 0) {
      for (const e of err.errors) if (!this.showFieldError(e.field, e.message)) unplaced.push(`${e.field}: ${e.message}`);
      if (unplaced.length === 0) return;
    }
    this.formError.textContent = unplaced.length ? unplaced.join("; ") : describeError(err);
    this.formError.hidden = false;
  }

  /** Show `message` under the input named `field`; false when the form has no such input. */
  private showFieldError(field: string, message: string): boolean {
    const input = this.form.elements.namedItem(field) as HTMLInputElement | null;
    const slot = document.getElementById(`${field}-error`);
    if (!input || !slot) return false;
    slot.textContent = message;
    slot.hidden = false;
    input.setAttribute("aria-invalid", "true");
    if (input.closest("details")) (input.closest("details") as HTMLDetailsElement).open = true;
    input.focus();
    return true;
  }

  private clearFieldError(field: string): void {
    const slot = document.getElementById(`${field}-error`);
    if (slot) slot.hidden = true;
    (this.form.elements.namedItem(field) as HTMLElement | null)?.removeAttribute("aria-invalid");
  }

  private clearErrors(): void {
    this.formError.hidden = true;
    for (const name of ["prompt", "model", ...NUMBER_FIELDS]) this.clearFieldError(name);
  }
}
