// conveyor dashboard: helpers every view uses. Everything shown is put in text nodes (never HTML),
// so what workers and tasks wrote is always escaped.
"use strict";

const $ = (sel) => document.querySelector(sel);
const FINAL = ["succeeded", "failed", "cancelled"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function fill(table, rows, empty) {
  const body = $(table + " tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", {class: "muted", colspan: "10"}, empty))]));
}

function ago(unix) {
  if (!unix) return "";
  const s = Math.max(0, Date.now() / 1000 - unix);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function clock(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "";
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

function argsText(call) {
  if (!call) return "";
  if (call.args_text) return call.args_text;
  const parts = (call.args || []).map((a) => JSON.stringify(a));
  for (const [k, v] of Object.entries(call.kwargs || {})) parts.push(`${k}=${JSON.stringify(v)}`);
  return parts.join(", ");
}

function labelsText(call) {
  if (!call) return "";
  return call.labels_text || JSON.stringify(call.labels || {});
}

// A value the server cut (`conveyor.recent.shown_value`): {value} or {text: its start}.
function shownText(shown) {
  if (!shown) return "";
  return shown.text !== undefined ? shown.text : JSON.stringify(shown.value, null, 2);
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

async function getJSON(path) {
  const answer = await fetch(path);
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw Object.assign(new Error(data.detail || `HTTP ${answer.status}`), {status: answer.status});
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

function taskButtons(task) {
  const id = encodeURIComponent(task.task_id);
  if (["queued", "scheduled", "running", "retrying"].includes(task.status)) {
    return [act("Cancel", `api/tasks/${id}/cancel`, () => `cancel requested for ${task.task_id}`, {cls: "danger"})];
  }
  return [act("Retry", `api/tasks/${id}/retry`, (d) => `sent again as ${d.task_id}`)];
}

// Links to the task and worker pages: real URLs (open in a new tab, share), followed in place.
function pageLink(key, value, text, attrs = {}) {
  const query = new URLSearchParams({[key]: value});
  return el("a", {href: `./?${query}`, "data-nav": "1", ...attrs}, text);
}

function taskLink(taskId, text) {
  return pageLink("task", taskId, text ?? taskId.slice(0, 12), {class: "mono", title: taskId});
}

function workerLink(name) {
  return name ? pageLink("worker", name, name) : "";
}

function badge(status) {
  return el("span", {class: `badge ${status}`, "data-status": status}, status);
}

// A progress report: a bar for a fraction (0..1) or {done|current, total}; else its text.
function progressNode(progress) {
  if (!progress) return "";
  if (progress.text !== undefined) return el("span", {class: "mono muted", title: progress.text}, progress.text);
  const value = progress.value;
  let fraction = null, label = null;
  if (typeof value === "number" && value >= 0 && value <= 1) {
    fraction = value;
    label = `${Math.round(value * 100)} %`;
  } else if (value && typeof value === "object" && typeof value.total === "number" && value.total > 0) {
    const done = value.done ?? value.current;
    if (typeof done === "number") [fraction, label] = [Math.min(1, Math.max(0, done / value.total)), `${done}/${value.total}`];
  }
  const text = label ?? JSON.stringify(value);
  if (fraction === null) return el("span", {class: "progress mono", "data-progress": text}, text);
  return el("span", {class: "progress", "data-progress": text}, el("progress", {max: "1", value: String(fraction)}), text);
}
