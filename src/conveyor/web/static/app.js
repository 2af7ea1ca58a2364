// conveyor dashboard: one snapshot per second over Server-Sent Events, rendered in place.
"use strict";

const $ = (sel) => document.querySelector(sel);
const history = [];          // {t, succeeded, failed, retried} per snapshot, for the chart
const HISTORY_SECONDS = 120;
let last = null;             // the previous snapshot's totals
let registeredShown = "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function fill(table, rows, empty) {
  const body = $(table + " tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", {class: "muted", colspan: "9"}, empty))]));
}

function ago(unix) {
  if (!unix) return "";
  const s = Math.max(0, Date.now() / 1000 - unix);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function duration(s) {
  if (s == null) return "";
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function uptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min` : `${s.toFixed(0)} s`;
}

function argsText(task) {
  if (task.args_text) return task.args_text;
  const parts = (task.args || []).map((a) => JSON.stringify(a));
  for (const [k, v] of Object.entries(task.kwargs || {})) parts.push(`${k}=${JSON.stringify(v)}`);
  return parts.join(", ");
}

function toast(text, bad = false) {
  const box = $("#toast");
  box.textContent = text;
  box.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.className = ""), 3500);
}

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST",
    headers: {"content-type": "application/json", "x-conveyor": "1"},  // no cross-site look-alike
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.detail || `HTTP ${answer.status}`);
  return data;
}

function confirmThen(text, action) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.onclose = () => { if (dialog.returnValue === "ok") action(); };
  dialog.showModal();
}

function act(label, path, done, options = {}) {
  const run = () => post(path, options.body).then((data) => toast(done(data))).catch((e) => toast(`${label}: ${e.message}`, true));
  return el("button", {class: `small ${options.cls || ""}`, "data-action": label.toLowerCase(),
    onclick: () => (options.confirm ? confirmThen(options.confirm, run) : run())}, label);
}

function showDetail(task) {
  $("#detail-title").textContent = `${task.task_name} [${task.task_id}]`;
  $("#detail-text").textContent = `${task.error || ""}\n\n${task.traceback || "(no traceback)"}` +
    `\n\narguments: ${argsText(task)}\nlabels: ${task.labels_text || JSON.stringify(task.labels || {})}`;
  $("#detail").showModal();
}

function taskActions(task) {
  const id = encodeURIComponent(task.task_id);
  const buttons = [];
  if (["queued", "scheduled", "running", "retrying"].includes(task.status)) {
    buttons.push(act("Cancel", `api/tasks/${id}/cancel`, () => `cancel requested for ${task.task_id}`, {cls: "danger"}));
  } else {
    buttons.push(act("Retry", `api/tasks/${id}/retry`, (d) => `sent again as ${d.task_id}`));
  }
  if (task.error) buttons.push(el("button", {class: "small", onclick: () => showDetail(task)}, "Details"));
  return el("td", {class: "actions"}, ...buttons);
}

function renderCards(data, totals) {
  const ready = data.queues.reduce((n, q) => n + q.ready + q.scheduled, 0);
  const inflight = data.workers.reduce((n, w) => n + w.running.length, 0);
  $("#c-workers").textContent = data.workers.length;
  $("#c-inflight").textContent = inflight;
  $("#c-ready").textContent = ready;
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
    el("td", {title: `pid ${w.pid}`}, `${w.host}:${w.pid}`), el("td", {}, w.queues.join(", ")),
    el("td", {}, `${w.running.length}/${w.concurrency || "?"}`), el("td", {}, w.counters.succeeded || 0),
    el("td", {}, w.counters.failed || 0), el("td", {}, `${w.rss_mb} MB`), el("td", {}, uptime(w.uptime)))),
  "no live worker: start one with `conveyor worker module:broker`");
}

function taskRow(task) {
  return el("tr", {"data-task-id": task.task_id, class: `st-${task.status}`},
    el("td", {}, el("span", {class: `badge ${task.status}`, "data-status": task.status}, task.status)),
    el("td", {}, task.task_name), el("td", {class: "mono", title: task.task_id}, task.task_id.slice(0, 12)),
    el("td", {class: "mono args", title: argsText(task)}, argsText(task)), el("td", {}, task.worker || ""),
    el("td", {}, duration(task.duration)), el("td", {}, ago(task.finished || task.started || task.sent)),
    taskActions(task));
}

function failedRow(task) {
  return el("tr", {"data-task-id": task.task_id},
    el("td", {}, task.task_name), el("td", {class: "mono", title: task.task_id}, task.task_id.slice(0, 12)),
    el("td", {class: "mono args"}, argsText(task)), el("td", {class: "error", title: task.error}, task.error || ""),
    el("td", {}, ago(task.finished)), taskActions(task));
}

function renderTasks(data) {
  fill("#recent", data.recent.slice(0, 50).map(taskRow), "no task yet");
  fill("#failed", data.failed.slice(0, 30).map(failedRow), "no failure");
  fill("#dead", data.dead_letters.map((d) => el("tr", {"data-task-id": d.task_id},
    el("td", {}, d.task_name), el("td", {class: "mono", title: d.task_id}, d.task_id.slice(0, 12)),
    el("td", {}, d.queue), el("td", {class: "error", title: d.reason}, d.reason),
    el("td", {class: "actions"}, act("Requeue", "api/dead-letters/requeue",
      (r) => `requeued ${r.requeued}`, {body: {task_ids: [d.task_id]}})))),
  "empty");
}

function renderSchedules(data) {
  fill("#schedules", data.schedules.map((s) => el("tr", {}, el("td", {}, s.task_name),
    el("td", {class: "mono"}, s.schedule + (s.stored ? " (stored)" : "")),
    el("td", {}, s.next_run ? new Date(s.next_run * 1000).toLocaleString() : ""))),
  "no schedule declared");
}

function renderSendForm(data) {
  const names = data.registered.map((t) => t.name).filter((n) => !n.startsWith("conveyor:"));
  if (names.join() === registeredShown) return;
  registeredShown = names.join();
  $("#send-name").replaceChildren(...names.map((n) => el("option", {value: n}, n)));
}

function totalsOf(data) {
  const totals = {succeeded: 0, failed: 0, retried: 0, received: 0};
  for (const counts of Object.values(data.tasks)) {
    for (const key of Object.keys(totals)) totals[key] += counts[key] || 0;
  }
  return totals;
}

function track(data, totals) {
  if (last) {
    const dt = Math.max(data.time - last.time, 0.001);
    const point = {t: data.time};
    for (const key of ["succeeded", "failed", "retried"]) point[key] = Math.max(0, totals[key] - last[key]) / dt;
    history.push(point);
    while (history.length && history[0].t < data.time - HISTORY_SECONDS) history.shift();
    $("#c-rate").textContent = (point.succeeded + point.failed).toFixed(1);
  }
  last = {...totals, time: data.time};
}

function drawChart() {
  const canvas = $("#chart");
  const width = (canvas.width = canvas.clientWidth * devicePixelRatio);
  const height = (canvas.height = 140 * devicePixelRatio);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...history.map((p) => Math.max(p.succeeded, p.failed, p.retried)));
  const now = history.length ? history[history.length - 1].t : 0;
  ctx.fillStyle = "#8a94a6";
  ctx.font = `${11 * devicePixelRatio}px system-ui`;
  ctx.fillText(`${peak.toFixed(1)}/s`, 4, 12 * devicePixelRatio);
  for (const [key, color] of [["succeeded", "#2f9e62"], ["failed", "#d9480f"], ["retried", "#e8a317"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.beginPath();
    history.forEach((p, i) => {
      const x = width - ((now - p.t) / HISTORY_SECONDS) * width;
      const y = height - 4 - (p[key] / peak) * (height - 20 * devicePixelRatio);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

function render(data) {
  const totals = totalsOf(data);
  $("#broker").textContent = data.broker;
  track(data, totals);
  renderCards(data, totals);
  renderQueues(data);
  renderWorkers(data);
  renderTasks(data);
  renderSchedules(data);
  renderSendForm(data);
  drawChart();
}

function setLive(ok, text) {
  const badge = $("#live");
  badge.className = ok ? "live on" : "live off";
  badge.textContent = text;
}

function connect() {
  const source = new EventSource("api/stream");
  source.onopen = () => setLive(true, "live");
  source.onmessage = (event) => { setLive(true, "live"); render(JSON.parse(event.data)); };
  source.addEventListener("problem", (event) => setLive(false, `broker: ${JSON.parse(event.data)}`));
  source.onerror = () => setLive(false, "reconnecting…");  // EventSource retries by itself
}

$("#send").addEventListener("submit", (event) => {
  event.preventDefault();
  let args;
  try { args = JSON.parse($("#send-args").value || "[]"); } catch (e) { toast("arguments: not JSON", true); return; }
  post(`tasks/${encodeURIComponent($("#send-name").value)}`, {args: Array.isArray(args) ? args : [args]})
    .then((d) => { $("#send-result").textContent = `sent ${d.task_id.slice(0, 12)}`; })
    .catch((e) => toast(e.message, true));
});
$("#requeue-all").addEventListener("click", () => confirmThen("Requeue every dead letter?", () =>
  post("api/dead-letters/requeue", {task_ids: null}).then((r) => toast(`requeued ${r.requeued}`)).catch((e) => toast(e.message, true))));
window.addEventListener("resize", drawChart);
connect();
