// The page's entry point: the API key (kept in localStorage), then the form, the open job and
// the job list. After a reload the open job reconnects to its stream with Last-Event-ID.

import { Api, describeError } from "./api";
import { byId } from "./dom";
import { JobForm } from "./form";
import { JobList } from "./job_list";
import { JobView } from "./job_view";
import { loadKey, loadOpenJob, saveKey, saveOpenJob } from "./storage";

let api: Api | null = null;
const getApi = (): Api | null => api;

const keyForm = byId<HTMLFormElement>("key-form");
const keyInput = byId<HTMLInputElement>("api-key");
const keyStatus = byId("key-status");

const view = new JobView(getApi, () => void jobs.load(true), (id) => jobs.forget(id));
const jobs = new JobList(getApi, (id) => void view.open(id, null, true));
const form = new JobForm((job) => {
  void view.open(job.id, null, true);
  void jobs.load(true);
});

function setKeyStatus(text: string, isError: boolean): void {
  keyStatus.textContent = text;
  keyStatus.classList.toggle("error", isError);
}

/** Check `key` by loading the models with it; on success load the jobs and reopen the open job. */
async function useKey(key: string): Promise<void> {
  api = null;
  if (!key) {
    await form.useApi(null);
    await jobs.load(true);
    setKeyStatus("Enter your API key to start.", false);
    keyInput.focus();
    return;
  }
  setKeyStatus("Checking the key…", false);
  const candidate = new Api(key);
  try {
    await form.useApi(candidate);
  } catch (err) {
    await form.useApi(null);
    setKeyStatus(describeError(err), true);
    keyInput.focus();
    return;
  }
  api = candidate;
  saveKey(key);
  setKeyStatus("Key accepted.", false);
  await jobs.load(true);
  const open = loadOpenJob();
  if (open && view.openJobId !== open.id) await view.open(open.id, open.lastEventId);
}

keyForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  void useKey(keyInput.value.trim());
});
byId("forget-key").addEventListener("click", () => {
  saveKey("");
  saveOpenJob(null);
  keyInput.value = "";
  view.close();
  byId("job").hidden = true;
  void useKey("");
});

keyInput.value = loadKey();
void useKey(keyInput.value);
