// conveyor dashboard: the history charts. Points come from the store (`api/history`, recorded by
// the web app every 10 s, so they survive a reload and a restart); the live snapshot adds "now".
"use strict";

const SERIES_LABEL = {hour: "last hour", day: "last 24 hours", week: "last 7 days"};
const RATE_LINES = [["succeeded", "#2f9e62"], ["failed", "#d9480f"], ["retried", "#e8a317"]];
const LOAD_LINES = [["waiting", "#8a94a6"], ["running", "#1f6feb"], ["workers", "#6c5ce7"]];
const charts = {series: "hour", stored: null, live: null, next: 0, loading: false};

function chosenSeries() {
  const asked = new URLSearchParams(location.search).get("series");
  return SERIES_LABEL[asked] ? asked : "hour";
}

async function loadHistory(series = charts.series) {
  if (charts.loading) return;
  charts.loading = true;
  try {
    const data = await getJSON(`api/history?series=${encodeURIComponent(series)}`);
    const rows = data.points.map((p) => Object.fromEntries(data.fields.map((f, i) => [f, p[i]])));
    charts.stored = {...data, rows};
    charts.series = series;
    charts.next = Date.now() / 1000 + Math.min(data.step, 60);
    for (const button of document.querySelectorAll("#series button")) {
      button.classList.toggle("chosen", button.dataset.series === series);
    }
    $("#history-span").textContent = SERIES_LABEL[series];
    drawCharts();
  } catch (e) {
    toast(`history: ${e.message}`, true);
  } finally {
    charts.loading = false;
  }
}

// The live snapshot as a point (not stored): the right end of the charts.
function trackLive(data, totals) {
  const running = data.workers.reduce((n, w) => n + w.running.length, 0);
  const waiting = data.queues.reduce((n, q) => n + q.ready + q.scheduled, 0);
  charts.live = {t: data.time, ...totals, waiting, running, workers: data.workers.length};
  if (charts.stored && data.time >= charts.next) loadHistory();
  else drawCharts();
}

function chartRows() {
  if (!charts.stored) return [];
  const rows = [...charts.stored.rows];
  const last = rows[rows.length - 1];
  if (charts.live && (!last || charts.live.t > last.t + 1)) rows.push(charts.live);
  return rows;
}

// Per second between two points (counters are cumulative); null across a gap (nothing recorded).
function rates(rows, step) {
  return rows.map((row, i) => {
    const before = rows[i - 1];
    if (!before || row.t - before.t > step * 2.5) return null;
    const dt = Math.max(row.t - before.t, 0.001);
    return Object.fromEntries(RATE_LINES.map(([key]) => [key, Math.max(0, row[key] - before[key]) / dt]));
  });
}

function drawCharts() {
  const rows = chartRows();
  if (!charts.stored) return;
  const {step, size} = charts.stored;
  const span = step * size;
  const now = charts.live ? charts.live.t : Date.now() / 1000;
  const times = rows.map((r) => r.t);
  draw($("#chart-rate"), times, rates(rows, step), RATE_LINES, span, now, "/s");
  const gaps = rows.map((row, i) => (i && row.t - rows[i - 1].t > step * 2.5 ? null : row));
  draw($("#chart-load"), times, gaps, LOAD_LINES, span, now, "");
}

function draw(canvas, times, values, lines, span, now, unit) {
  const ratio = devicePixelRatio;
  const width = (canvas.width = canvas.clientWidth * ratio);
  const height = (canvas.height = canvas.clientHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...values.flatMap((v) => (v ? lines.map(([key]) => v[key]) : [])));
  const x = (t) => width - ((now - t) / span) * width;
  const y = (v) => height - 14 * ratio - (v / peak) * (height - 30 * ratio);
  ctx.fillStyle = ctx.strokeStyle = getComputedStyle(canvas).color;
  ctx.font = `${11 * ratio}px system-ui`;
  ctx.globalAlpha = 0.25;
  ctx.beginPath();
  ctx.moveTo(0, y(0));
  ctx.lineTo(width, y(0));
  ctx.stroke();
  ctx.globalAlpha = 1;
  ctx.fillText(`${Number.isInteger(peak) ? peak : peak.toFixed(2)}${unit}`, 4, 12 * ratio);
  ctx.fillText(SERIES_LABEL[charts.series].replace("last ", "−"), 4, height - 2 * ratio);
  ctx.fillText("now", width - 26 * ratio, height - 2 * ratio);
  for (const [key, color] of lines) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    let drawing = false;
    values.forEach((v, i) => {
      if (!v) { drawing = false; return; }
      drawing ? ctx.lineTo(x(times[i]), y(v[key])) : ctx.moveTo(x(times[i]), y(v[key]));
      drawing = true;
    });
    ctx.stroke();
  }
  canvas.dataset.points = String(values.filter(Boolean).length);
}

function initCharts() {
  charts.series = chosenSeries();
  for (const button of document.querySelectorAll("#series button")) {
    button.addEventListener("click", () => {
      const query = new URLSearchParams(location.search);
      query.set("series", button.dataset.series);
      history.replaceState(null, "", `./?${query}`);
      loadHistory(button.dataset.series);
    });
  }
  window.addEventListener("resize", drawCharts);
  loadHistory();
}
