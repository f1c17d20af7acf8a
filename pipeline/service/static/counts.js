// Counts: today's line crossings and zone visits per camera ("today" in the console's time zone).

import { el, get } from "./api.js";

let timer = null;

export function show() {
  render();
  timer = setInterval(render, 5000);
}

export function hide() {
  clearInterval(timer);
}

async function render() {
  const box = document.getElementById("counts");
  let counts;
  try {
    counts = await get("/api/counts");
  } catch (exc) {
    box.replaceChildren(el("p", { class: "error" }, exc.message));
    return;
  }
  document.getElementById("counts-title").textContent = `Today, ${counts.day} (${counts.time_zone})`;
  const cell = (value, numeric) => el("td", numeric ? { class: "n" } : {}, String(value ?? "-"));
  const table = (head, rows) => el("table", {}, el("tr", {}, ...head.map((h) => el("th", {}, h))), ...rows);
  box.replaceChildren(...Object.entries(counts.cameras).map(([stream, { lines, zones }]) => el("div",
    { "data-stream": stream }, el("h3", {}, stream),
    lines.length ? table(["line", "direction", "class", "crossings"], lines.map((r) => el("tr", {},
      cell(r.line), cell(r.direction), cell(r.class_name), cell(r.crossings, true)))) : el("p", { class: "muted" }, "no crossings today"),
    zones.length ? table(["zone", "class", "visits today", "inside now"], zones.map((r) => el("tr", {},
      cell(r.zone), cell(r.class_name), cell(r.visits, true), cell(r.inside, true)))) : el("p", { class: "muted" }, "no zone visits today"))));
}
