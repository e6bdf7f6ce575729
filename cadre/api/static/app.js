// The live page: submit a task, follow its conversation over server-sent events, answer
// the user proxy, cancel. Plain DOM code, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FINISHED = ["completed", "failed", "cancelled"];
let current = null; // { id, source, shown, timer }
let pendingKey = null; // the Idempotency-Key of a submit not yet acknowledged (a retry reuses it)

function apiKey() { return sessionStorage.getItem("cadre-api-key") || ""; }

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey()) headers["x-api-key"] = apiKey();
  const response = await fetch("api/" + path, {
    ...options, headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key-row").hidden = false;
    $("api-key").focus();
  }
  if (!response.ok) throw new Error(data.detail || data.title || response.statusText);
  return data;
}

function notice(text) { $("notice").textContent = text || ""; }

async function loadTeams() {
  try {
    const teams = await api("teams");
    const select = $("team");
    select.replaceChildren(...teams.map((t) => new Option(`${t.name} (${t.pattern})`, t.name)));
    const describe = () => {
      const team = teams.find((t) => t.name === select.value);
      $("team-members").textContent = team
        ? team.participants.map((p) => p.kind === "user_proxy" ? `${p.name} (you)` : p.name)
            .join(", ")
        : "";
    };
    select.onchange = describe;
    describe();
  } catch (error) { notice(`Could not list teams: ${error.message}`); }
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";
}

function addMessage(m) {
  const item = document.createElement("li");
  item.className = `${m.kind} ${m.source === "user" ? "user" : ""}`;
  item.dataset.index = m.index;
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = m.source;
  const when = document.createElement("time");
  if (m.at) when.dateTime = m.at;
  when.textContent = time(m.at);
  meta.append(who, when);
  if (m.tokens) meta.append(` · ${m.tokens} tokens`);
  if (m.kind !== "text") meta.append(` · ${m.kind.replace("_", " ")}${m.tool_name ? ` (${m.tool_name})` : ""}`);
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = m.content;
  item.append(meta, text);
  $("timeline").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function showStatus(s) {
  const status = $("status");
  status.textContent = s.status.replace("_", " ");
  status.className = `status ${s.status}`;
  $("speaker").textContent = s.speaker && s.status === "running" ? `· ${s.speaker} is working` : "";
  const waiting = s.status === "awaiting_input";
  const form = $("input-form");
  if (waiting && form.hidden) {
    $("input-label").textContent = s.prompt || "Your input:";
    form.hidden = false;
    $("input-text").focus();
  } else if (!waiting) {
    form.hidden = true;
  }
  $("cancel").disabled = FINISHED.includes(s.status);
  if (!FINISHED.includes(s.status)) $("continue-form").hidden = true;
}

async function finish(end) {
  showStatus({ status: end.status });
  $("continue-form").hidden = false;
  if (end.status === "completed" && end.result !== null && end.result !== undefined) {
    $("result").textContent = end.result;
    $("result-box").hidden = false;
  }
  if (end.status !== "completed" && end.stop_reason) notice(`Task ${end.status}: ${end.stop_reason}`);
  try {
    const task = await api(`tasks/${current.id}`);
    const total = Object.values(task.usage_by_agent)
      .reduce((n, u) => n + u.prompt_tokens + u.completion_tokens, 0);
    $("tokens").textContent = `· ${total} tokens in all`;
  } catch (_) { /* the totals are a nicety */ }
}

function onMessage(m) {
  if (m.index < current.shown) return;
  current.shown = m.index + 1;
  addMessage(m);
}

function follow(id, keep = false) {
  stopFollowing();
  if (keep) { // a continued task: keep what is shown, follow from there
    current = { id, source: null, shown: current.shown, timer: null };
  } else {
    current = { id, source: null, shown: 0, timer: null };
    $("timeline").replaceChildren();
  }
  $("task-view").hidden = false;
  $("task-id").textContent = id;
  $("result-box").hidden = true;
  $("tokens").textContent = "";
  $("input-form").hidden = true;
  $("continue-form").hidden = true;
  history.replaceState(null, "", `#task=${id}`);
  if (apiKey()) { poll(id); return; } // EventSource cannot send the key header
  const source = new EventSource(`api/tasks/${id}/messages?after=${current.shown}`);
  current.source = source;
  source.addEventListener("message", (e) => onMessage(JSON.parse(e.data)));
  source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  source.addEventListener("end", (e) => { source.close(); finish(JSON.parse(e.data)); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) { source.close(); poll(id); }
  };
}

async function poll(id) {
  if (!current || current.id !== id) return;
  try {
    const page = await api(`tasks/${id}/messages?after=${current.shown}&limit=100`);
    page.messages.forEach(onMessage);
    const task = await api(`tasks/${id}`);
    showStatus(task);
    if (FINISHED.includes(task.status) && !page.has_more) {
      finish({ status: task.status, result: task.result, stop_reason: task.stop_reason });
      return;
    }
  } catch (error) { notice(error.message); }
  current.timer = setTimeout(() => poll(id), 500);
}

function stopFollowing() {
  if (!current) return;
  if (current.source) current.source.close();
  clearTimeout(current.timer);
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

$("task").addEventListener("input", () => { pendingKey = null; });
$("team").addEventListener("change", () => { pendingKey = null; });

$("api-key").addEventListener("change", (e) => {
  sessionStorage.setItem("cadre-api-key", e.target.value);
  loadTeams();
});

$("submit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  notice("");
  $("submit").disabled = true;
  pendingKey = pendingKey || newKey();
  try {
    const task = await api("tasks", {
      method: "POST",
      body: { team: $("team").value, task: $("task").value },
      headers: { "Idempotency-Key": pendingKey },
    });
    pendingKey = null;
    follow(task.task_id);
  } catch (error) { notice(`Could not start the task: ${error.message}`); }
  finally { $("submit").disabled = false; }
});

$("input-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("input-text").value;
  try {
    await api(`tasks/${current.id}/input`, { method: "POST", body: { text } });
    $("input-text").value = "";
    $("input-form").hidden = true;
  } catch (error) { notice(`Could not send the answer: ${error.message}`); }
});

$("continue-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("continue-text").value;
  const id = current.id;
  $("send-continue").disabled = true;
  try {
    const before = (await api(`tasks/${id}`)).messages;
    await api(`tasks/${id}/messages`, { method: "POST", body: { text } });
    $("continue-text").value = "";
    for (let i = 0; i < 100; i += 1) { // until the task has taken the message (<= 10 s)
      if ((await api(`tasks/${id}`)).messages > before) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    follow(id, true);
  } catch (error) { notice(`Could not continue the task: ${error.message}`); }
  finally { $("send-continue").disabled = false; }
});

$("cancel").addEventListener("click", async () => {
  try {
    await api(`tasks/${current.id}/cancel`, { method: "POST", body: { reason: "cancelled on the page" } });
    notice("Cancel requested.");
  } catch (error) { notice(`Could not cancel: ${error.message}`); }
});

if ($("api-key")) $("api-key").value = apiKey();
loadTeams();
const match = location.hash.match(/task=([A-Za-z0-9_.-]+)/);
if (match) follow(match[1]);
