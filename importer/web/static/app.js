// The page calls the server's JSON routes; the server calls the library. No state lives here but what is shown.
"use strict";
const $ = (id) => document.getElementById(id);
const shown = (id, yes) => { $(id).hidden = !yes; };

function say(error) {
  $("error").textContent = error ? error.message : "";
  shown("error", !!error);
}

async function call(path, body) {
  const answer = await fetch(path, { method: body ? "POST" : "GET", body, credentials: "same-origin" });
  const data = await answer.json().catch(() => ({ error: { message: `the server answered ${answer.status}` } }));
  say(data.error);
  return data;
}

function countsText(counts) {
  return Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`).join(", ") || "no rows";
}

function units(cents, decimals) {
  const sign = cents < 0n ? "-" : "";
  const digits = (cents < 0n ? -cents : cents).toString().padStart(decimals + 1, "0");
  const whole = digits.slice(0, digits.length - decimals).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + whole + (decimals ? "." + digits.slice(digits.length - decimals) : "");
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }));
}

function options(form) {
  for (const name of ["sheet", "date_format", "currency_decimals"]) form.append(name, $(name).value);
  return form;
}

function showCheck(summary) {
  shown("check", true);
  $("counts").textContent = `${summary.rows} rows: ${countsText(summary.counts)}`;
  $("notes").replaceChildren(...summary.notes.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
  const issues = summary.issues;
  shown("issues", issues.length > 0);
  fill($("issues").tBodies[0], issues.map((i) => [[i.row, "num"], [i.column || ""], [i.value ?? ""], [i.message]]));
  shown("step-connect", summary.counts.valid > 0);
  shown("plan", false);
}

async function check(file) {
  const form = options(new FormData());
  if (file) form.append("file", file);
  const summary = await call("/api/schedule", form);
  if (!summary.error) showCheck(summary);
}

function showPlan(summary) {
  showCheck(summary);
  shown("plan", true);
  const c = summary.counts;
  $("plan-counts").textContent = `to create: ${c.valid}, already in Kantata: ${c.unchanged}` +
    (c.update ? `, to update: ${c.update}` : "") + (c.conflict ? `, in conflict: ${c.conflict}` : "") +
    `, invalid: ${c.invalid}`;
  fill($("totals").tBodies[0], summary.totals.map((t) => [[t.workspace_id, "num"], [t.currency || ""],
    [t.rows.valid || 0, "num"], [units(BigInt(t.cents.valid || 0), t.decimals), "num"]]));
  shown("upload", c.valid > 0 || (c.update || 0) > 0);
}

async function connect() {
  const form = new FormData();
  form.append("base_url", $("base_url").value);
  form.append("token", $("token").value);
  $("token").value = "";  // kept by the server for this session only
  const summary = await call("/api/connect", form);
  if (!summary.error) showPlan(summary);
}

async function upload() {
  shown("step-upload", true);
  shown("done", false);
  shown("stop", true);
  const started = await call("/api/upload", new FormData());
  if (!started.error) poll();
}

async function poll() {
  const state = await call("/api/progress");
  const send = (state.stages || {}).send;
  if (send && send.total) {
    $("bar").max = send.total;
    $("bar").value = send.done;
    $("progress-text").textContent = `${send.done} of ${send.total} rows sent`;
  }
  $("messages").replaceChildren(...(state.messages || []).slice(-5).map((m) =>
    Object.assign(document.createElement("li"), { textContent: m })));
  if (state.running) {
    setTimeout(poll, 200);
    return;
  }
  shown("stop", false);
  if (state.summary) {
    const s = state.summary;
    shown("done", true);
    $("done-counts").textContent = (s.stopped ? `Stopped: ${s.stopped.message}. ` : "Finished: ") + countsText(s.counts);
  }
}

$("file").addEventListener("change", () => check($("file").files[0]));
$("recheck").addEventListener("click", () => check(null));
$("connect").addEventListener("click", connect);
$("upload").addEventListener("click", upload);
$("again").addEventListener("click", upload);
$("stop").addEventListener("click", () => call("/api/stop", new FormData()));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); check(e.dataTransfer.files[0]); });
