// conveyor dashboard: the page of one task (`?task=<id>`) and of one worker (`?worker=<name>`).
// Each is a real URL; links to them are followed in place (history.pushState) or in a new tab.
"use strict";

const page = {view: "overview", key: null, loading: false, done: false, finalReads: 0};

function route() {
  const query = new URLSearchParams(location.search);
  const [view, key] = query.has("task") ? ["task", query.get("task")]
    : query.has("worker") ? ["worker", query.get("worker")] : ["overview", null];
  Object.assign(page, {view, key, done: false, finalReads: 0});
  for (const name of ["overview", "task", "worker"]) $(`#view-${name}`).hidden = name !== view;
  document.title = key ? `${key} · conveyor` : "conveyor";
  if (view === "overview") {
    showFilters();
    connect();
    drawCharts();
  } else {
    $(`#${view}-page`).replaceChildren(el("p", {class: "muted"}, "loading…"));
    refreshPage();
  }
}

function go(href) {
  history.pushState(null, "", href);
  route();
  window.scrollTo(0, 0);
}

// Called on every live snapshot: a page whose task has not ended is read again.
async function refreshPage() {
  if (page.view === "overview" || page.loading || page.done) return;
  const {view, key} = page;
  page.loading = true;
  try {
    const path = view === "task" ? `api/tasks/${encodeURIComponent(key)}` : `api/workers/${encodeURIComponent(key)}`;
    const data = await getJSON(path);
    if (page.view !== view || page.key !== key) return;  // the user went elsewhere meanwhile
    if (view === "task") renderTask(data);
    else renderWorker(data);
  } catch (e) {
    if (page.view === view && page.key === key) {
      $(`#${view}-page`).replaceChildren(el("p", {class: "error", "data-missing": "1"}, e.message));
      page.done = e.status === 404;
    }
  } finally {
    page.loading = false;
  }
}

function panel(title, ...content) {
  return el("section", {class: "panel"}, el("h2", {}, title), ...content);
}

function facts(pairs) {
  return el("dl", {class: "facts"}, pairs.filter(([, v]) => v !== "" && v != null)
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderTask(task) {
  // an ended task changes no more, but the workers' lists of its attempts may lag a second
  page.finalReads = FINAL.includes(task.status) ? (page.finalReads || 0) + 1 : 0;
  page.done = page.finalReads >= 3;
  const result = task.result;
  const head = el("div", {class: "page-head"},
    el("h2", {}, task.task_name || "task", " ", el("span", {class: "mono muted"}, task.task_id)),
    badge(task.status), el("span", {class: "actions"}, taskButtons(task)));
  const summary = panel("Summary", facts([
    ["status", task.status], ["queue", task.queue], ["sent", clock(task.sent)],
    ["started", clock(result?.started)], ["finished", clock(result?.finished)],
    ["ran for", duration(result?.execution_time)], ["attempts", result?.attempts ?? task.attempts.length],
    ["worker", workerLink(result?.worker || task.attempts.at(-1)?.worker)],
  ]));
  const call = panel("Call", task.call
    ? facts([["arguments", el("code", {id: "task-args"}, argsText(task.call) || "(none)")], ["labels", el("code", {}, labelsText(task.call))]])
    : el("p", {class: "muted"}, "not known any more (no worker lists it)"));
  $("#task-page").replaceChildren(head, el("div", {class: "grid"}, summary, call),
    panel("Progress", el("div", {id: "task-progress"}, task.progress ? progressNode(task.progress) : el("span", {class: "muted"}, "none reported"))),
    panel("Result", taskResult(task)), panel("Attempts", timeline(task)), ...workflow(task.workflow));
}

function taskResult(task) {
  const result = task.result;
  if (!result) return el("p", {class: "muted"}, FINAL.includes(task.status) ? "no result kept" : "not finished yet");
  if (result.error) {
    return el("div", {}, el("p", {class: "error", id: "task-error"}, result.error),
      el("pre", {id: "task-traceback"}, result.traceback || "(no traceback)"));
  }
  return el("pre", {id: "task-return"}, shownText(result.return_value));
}

function timeline(task) {
  const items = [];
  if (task.sent) items.push(el("li", {}, el("b", {}, "sent"), " ", clock(task.sent)));
  for (const run of task.attempts) {
    items.push(el("li", {"data-attempt": run.attempt},
      el("b", {}, `attempt ${run.attempt}`), " ", badge(run.status), " on ", workerLink(run.worker),
      ` · started ${clock(run.started)}`, run.duration != null ? ` · ${duration(run.duration)}` : "",
      run.error ? el("div", {class: "error"}, run.error) : "",
      run.traceback && run.status !== task.result?.status ? el("details", {}, el("summary", {}, "traceback"), el("pre", {}, run.traceback)) : ""));
  }
  if (task.dead_letter) {
    const letter = task.dead_letter;
    items.push(el("li", {}, el("b", {}, "dead-lettered"), ` ${clock(letter.failed_at)} from ${letter.queue}: `,
      el("span", {class: "error"}, letter.reason)));
  }
  return items.length ? el("ol", {class: "timeline", id: "task-timeline"}, items) : el("p", {class: "muted"}, "no attempt listed yet");
}

function workflow(flow) {
  if (!flow) return [];
  const step = (id) => id.split("-").at(-1);
  const rows = flow.steps.map((s) => el("tr", {"data-task-id": s.task_id},
    el("td", {}, badge(s.status)), el("td", {}, s.task_name), el("td", {}, taskLink(s.task_id, step(s.task_id)))));
  const next = flow.next.map((s) => el("li", {"data-task-id": s.task_id},
    taskLink(s.task_id, step(s.task_id)), " ", s.status ? badge(s.status) : "not sent yet"));
  const about = facts([
    ["workflow", taskLink(flow.id, `${flow.kind || "workflow"} ${flow.id.slice(0, 12)}`)],
    ["its status", flow.status ? badge(flow.status) : ""], ["this step", flow.path],
    ["next", next.length ? el("ul", {id: "workflow-next"}, next) : ""],
  ]);
  const head = el("thead", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "task"), el("th", {}, "step")));
  const body = el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", {class: "muted", colspan: "3"}, "no step listed")));
  return [panel("Workflow", about, el("table", {id: "workflow-steps"}, head, body))];
}

function renderWorker(worker) {
  const beat = worker.heartbeat;
  const head = el("div", {class: "page-head"}, el("h2", {}, "worker ", el("span", {class: "mono"}, worker.name)),
    el("span", {class: `live ${worker.live ? "on" : "off"}`, id: "worker-live"}, worker.live ? "live" : "gone"));
  const about = beat ? facts([
    ["host", beat.host], ["pid", beat.pid], ["queues", beat.queues.join(", ")],
    ["running", `${beat.running.length}/${beat.concurrency || "?"}`], ["memory", `${beat.rss_mb} MB`],
    ["up for", uptime(beat.uptime)], ...Object.entries(beat.counters).map(([k, v]) => [k, v]),
  ]) : el("p", {class: "muted"}, "no heartbeat: the worker stopped; its last tasks stay listed for an hour");
  const running = beat && beat.running.length
    ? el("ul", {id: "worker-running"}, beat.running.map((id) => el("li", {}, taskLink(id))))
    : el("p", {class: "muted"}, "nothing");
  const table = (id, rows, empty) => el("div", {class: "scroll"}, el("table", {id},
    el("thead", {}, el("tr", {}, TASK_COLUMNS.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows.map(taskRow) : el("tr", {}, el("td", {class: "muted", colspan: "9"}, empty)))));
  $("#worker-page").replaceChildren(head, el("div", {class: "grid"}, panel("Heartbeat", about), panel("Running now", running)),
    panel("Recent tasks", table("worker-recent", worker.recent, "none listed")),
    panel("Failed tasks", table("worker-failed", worker.failed, "none")));
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});
window.addEventListener("popstate", route);
