// conveyor dashboard: the overview, fed one snapshot per second over Server-Sent Events (its
// recent tasks filtered by the server, as the URL's name, state and queue say), rendered in place.
"use strict";

const TASK_COLUMNS = ["status", "task", "id", "arguments", "progress", "worker", "duration", "when", ""];
const STATES = ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"];
let last = null;             // the previous snapshot's totals, for the rate card
let registeredShown = "";
let source = null, streaming = "";

function showDetail(task) {
  $("#detail-title").textContent = `${task.task_name} [${task.task_id}]`;
  $("#detail-text").textContent = `${task.error || ""}\n\n${task.traceback || "(no traceback)"}` +
    `\n\narguments: ${argsText(task)}\nlabels: ${labelsText(task)}`;
  $("#detail").showModal();
}

function taskActions(task) {
  const buttons = taskButtons(task);
  if (task.error) buttons.push(el("button", {class: "small", onclick: () => showDetail(task)}, "Details"));
  return el("td", {class: "actions"}, ...buttons);
}

function renderCards(data, totals) {
  $("#c-workers").textContent = data.workers.length;
  $("#c-inflight").textContent = data.workers.reduce((n, w) => n + w.running.length, 0);
  $("#c-ready").textContent = data.queues.reduce((n, q) => n + q.ready + q.scheduled, 0);
  for (const key of ["succeeded", "failed", "retried"]) $(`#c-${key}`).textContent = totals[key];
}

function renderQueues(data) {
  fill("#queues", data.queues.map((q) => el("tr", {"data-queue": q.name}, el("td", {}, q.name),
    el("td", {}, q.ready), el("td", {}, q.scheduled), el("td", {}, q.running),
    el("td", {class: "actions"}, act("Purge", `api/queues/${encodeURIComponent(q.name)}/purge`,
      (d) => `purged ${d.purged} message(s) from ${q.name}`,
      {cls: "danger", confirm: `Delete the ${q.ready + q.scheduled} waiting message(s) of queue "${q.name}"? This cannot be undone.`})))),
  "no messages waiting");
}

function renderWorkers(data) {
  fill("#workers", data.workers.map((w) => el("tr", {"data-worker": w.name},
    el("td", {title: `pid ${w.pid}`}, workerLink(w.name)), el("td", {}, w.queues.join(", ")),
    el("td", {}, `${w.running.length}/${w.concurrency || "?"}`), el("td", {}, w.counters.succeeded || 0),
    el("td", {}, w.counters.failed || 0), el("td", {}, `${w.rss_mb} MB`), el("td", {}, uptime(w.uptime)))),
  "no live worker: start one with `conveyor worker module:broker`");
}

function taskRow(task) {
  return el("tr", {"data-task-id": task.task_id, class: `st-${task.status}`},
    el("td", {}, badge(task.status)), el("td", {}, task.task_name), el("td", {}, taskLink(task.task_id)),
    el("td", {class: "mono args", title: argsText(task)}, argsText(task)),
    el("td", {class: "progress-cell"}, progressNode(task.progress)), el("td", {}, workerLink(task.worker)),
    el("td", {}, duration(task.duration)), el("td", {}, ago(task.finished || task.started || task.sent)),
    taskActions(task));
}

function failedRow(task) {
  return el("tr", {"data-task-id": task.task_id},
    el("td", {}, task.task_name), el("td", {}, taskLink(task.task_id)),
    el("td", {class: "mono args"}, argsText(task)), el("td", {class: "error", title: task.error}, task.error || ""),
    el("td", {}, ago(task.finished)), taskActions(task));
}

function renderTasks(data) {
  const filtered = filters().toString() ? "no task matches these filters" : "no task yet";
  fill("#recent", data.recent.slice(0, 50).map(taskRow), filtered);
  fill("#failed", data.failed.slice(0, 30).map(failedRow), filtered === "no task yet" ? "no failure" : filtered);
  fill("#dead", data.dead_letters.map((d) => el("tr", {"data-task-id": d.task_id},
    el("td", {}, d.task_name), el("td", {}, taskLink(d.task_id)),
    el("td", {}, d.queue), el("td", {class: "error", title: d.reason}, d.reason),
    el("td", {class: "actions"}, act("Requeue", "api/dead-letters/requeue",
      (r) => `requeued ${r.requeued}`, {body: {task_ids: [d.task_id]}})))),
  "empty");
}

function renderSchedules(data) {
  fill("#schedules", data.schedules.map((s) => el("tr", {}, el("td", {}, s.task_name),
    el("td", {class: "mono"}, s.schedule + (s.stored ? " (stored)" : "")), el("td", {}, clock(s.next_run)))),
  "no schedule declared");
}

function renderChoices(data) {
  const names = data.registered.map((t) => t.name).filter((n) => !n.startsWith("conveyor:"));
  const queues = new Set([...data.queues.map((q) => q.name), ...data.registered.map((t) => t.labels.queue || "default"),
    ...data.recent.map((t) => t.queue).filter(Boolean), filters().get("queue") || "default"]);
  const shown = `${names.join()}|${[...queues].sort().join()}`;
  if (shown === registeredShown) return;
  registeredShown = shown;
  $("#send-name").replaceChildren(...names.map((n) => el("option", {value: n}, n)));
  $("#filter-queue").replaceChildren(el("option", {value: ""}, "any queue"), ...[...queues].sort().map((q) => el("option", {value: q}, q)));
  $("#filter-queue").value = filters().get("queue") || "";
}

function totalsOf(data) {
  const totals = {succeeded: 0, failed: 0, retried: 0, cancelled: 0};
  for (const counts of Object.values(data.tasks)) {
    for (const key of Object.keys(totals)) totals[key] += counts[key] || 0;
  }
  return totals;
}

function trackRate(data, totals) {
  if (last) {
    const dt = Math.max(data.time - last.time, 0.001);
    const done = totals.succeeded + totals.failed - last.succeeded - last.failed;
    $("#c-rate").textContent = (Math.max(0, done) / dt).toFixed(1);
  }
  last = {...totals, time: data.time};
}

function render(data) {
  const totals = totalsOf(data);
  $("#broker").textContent = data.broker;
  trackRate(data, totals);
  trackLive(data, totals);
  if (page.view !== "overview") return refreshPage();
  renderCards(data, totals);
  renderQueues(data);
  renderWorkers(data);
  renderTasks(data);
  renderSchedules(data);
  renderChoices(data);
}

// -- filters: in the URL (so a filtered view is a link), applied by the server to the stream ----

function filters() {
  const query = new URLSearchParams(location.search), chosen = new URLSearchParams();
  for (const key of ["name", "state", "queue"]) if (query.get(key)) chosen.set(key, query.get(key));
  return chosen;
}

function showFilters() {
  const chosen = filters();
  $("#filter-name").value = chosen.get("name") || "";
  $("#filter-state").value = chosen.get("state") || "";
  $("#filter-queue").value = chosen.get("queue") || "";
}

function applyFilters() {
  const query = new URLSearchParams(location.search);
  for (const key of ["name", "state", "queue"]) {
    const value = $(`#filter-${key}`).value.trim();
    value ? query.set(key, value) : query.delete(key);
  }
  history.replaceState(null, "", query.toString() ? `./?${query}` : "./");
  connect();
}

function setLive(ok, text) {
  const live = $("#live");
  live.className = ok ? "live on" : "live off";
  live.textContent = text;
}

function connect() {
  const wanted = page.view === "overview" ? filters().toString() : streaming;
  if (source && wanted === streaming) return;
  if (source) source.close();
  streaming = wanted;
  source = new EventSource(`api/stream${wanted ? `?${wanted}` : ""}`);
  source.onopen = () => setLive(true, "live");
  source.onmessage = (event) => { setLive(true, "live"); render(JSON.parse(event.data)); };
  source.addEventListener("problem", (event) => setLive(false, `broker: ${JSON.parse(event.data)}`));
  source.onerror = () => setLive(false, "reconnecting…");  // EventSource retries by itself
}

function init() {
  $("#filter-state").replaceChildren(el("option", {value: ""}, "any state"), ...STATES.map((s) => el("option", {value: s}, s)));
  $("#recent thead tr").replaceChildren(...TASK_COLUMNS.map((h) => el("th", {}, h)));
  let typing = null;
  $("#filter-name").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(applyFilters, 300); });
  for (const key of ["state", "queue"]) $(`#filter-${key}`).addEventListener("change", applyFilters);
  $("#filter-clear").addEventListener("click", () => {
    for (const key of ["name", "state", "queue"]) $(`#filter-${key}`).value = "";
    applyFilters();
  });
  $("#send").addEventListener("submit", (event) => {
    event.preventDefault();
    let args;
    try { args = JSON.parse($("#send-args").value || "[]"); } catch (e) { toast("arguments: not JSON", true); return; }
    post(`tasks/${encodeURIComponent($("#send-name").value)}`, {args: Array.isArray(args) ? args : [args]})
      .then((d) => { $("#send-result").replaceChildren("sent ", taskLink(d.task_id)); })
      .catch((e) => toast(e.message, true));
  });
  $("#requeue-all").addEventListener("click", () => confirmThen("Requeue every dead letter?", () =>
    post("api/dead-letters/requeue", {task_ids: null}).then((r) => toast(`requeued ${r.requeued}`)).catch((e) => toast(e.message, true))));
  initCharts();
  route();
  connect();
}

init();
