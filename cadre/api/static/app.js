// The live page: submit a task, follow its conversation over server-sent events, answer
// the user proxy, cancel. Plain DOM code, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FINISHED = ["completed", "failed", "cancelled"];
let current = null; // { id, source, shown, timer, answeredAt }
let pendingKey = null; // the Idempotency-Key of a submit not yet acknowledged (a retry reuses it)
let teams = []; // GET api/teams: the model and termination of each team

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
    teams = await api("teams");
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

// A tool call's content is JSON: [{id, name, arguments (a JSON string)}]. Show each call as
// its name and its arguments, formatted; anything else as the text it is.
function toolCalls(content) {
  try {
    const calls = JSON.parse(content);
    if (!Array.isArray(calls)) return null;
    return calls.map((call) => {
      let args = call.arguments || "{}";
      try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (_) { /* as sent */ }
      const block = document.createElement("div");
      block.className = "call";
      const name = document.createElement("code");
      name.className = "tool-name";
      name.textContent = call.name;
      const pre = document.createElement("pre");
      pre.className = "args";
      pre.textContent = args;
      block.append(name, pre);
      return block;
    });
  } catch (_) { return null; }
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
  const calls = m.kind === "tool_call" ? toolCalls(m.content) : null;
  if (calls) {
    item.append(meta, ...calls);
  } else {
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = m.content;
    item.append(meta, text);
  }
  $("timeline").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function showTokens(total, done) {
  if (total === undefined || total === null) return;
  $("tokens").textContent = `· ${total} tokens${done ? " in all" : " so far"}`;
}

// A prompt is new once the conversation has grown past the answer to the last one (the
// answer is itself a message), so any number of prompts in one task each get the box.
function freshPrompt() {
  return current.answeredAt === null || current.shown > current.answeredAt;
}

function showStatus(s) {
  const status = $("status");
  status.textContent = s.status.replace("_", " ");
  status.className = `status ${s.status}`;
  $("speaker").textContent = s.speaker && s.status === "running" ? `· ${s.speaker} is working` : "";
  if (!FINISHED.includes(s.status)) showTokens(s.tokens, false);
  const waiting = s.status === "awaiting_input";
  const form = $("input-form");
  if (waiting && form.hidden && freshPrompt()) {
    $("input-label").textContent = s.prompt || "Your input:";
    form.hidden = false;
    $("input-text").focus();
  } else if (!waiting) {
    form.hidden = true;
  }
  $("cancel").disabled = FINISHED.includes(s.status);
  if (!FINISHED.includes(s.status)) {
    $("continue-form").hidden = true;
    $("outcome").hidden = true;
  }
}

async function finish(end) {
  showStatus({ status: end.status });
  $("continue-form").hidden = false;
  if (end.status === "completed" && end.result !== null && end.result !== undefined) {
    $("result").textContent = end.result;
    $("result-box").hidden = false;
  }
  if (end.status !== "completed" && end.stop_reason) notice(`Task ${end.status}: ${end.stop_reason}`);
  $("stop-reason").textContent = end.stop_reason || "-";
  $("outcome").hidden = false;
  try {
    const task = await api(`tasks/${current.id}`);
    showTokens(task.usage.prompt_tokens + task.usage.completion_tokens, true);
    const team = teams.find((t) => t.name === task.team);
    $("model").textContent = team ? team.model : "-";
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
    current = { id, source: null, shown: current.shown, timer: null, answeredAt: null };
  } else {
    current = { id, source: null, shown: 0, timer: null, answeredAt: null };
    $("timeline").replaceChildren();
  }
  $("task-view").hidden = false;
  $("task-id").textContent = id;
  $("result-box").hidden = true;
  $("tokens").textContent = "";
  $("input-form").hidden = true;
  $("continue-form").hidden = true;
  $("outcome").hidden = true;
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
    showStatus({ ...task, tokens: task.usage.prompt_tokens + task.usage.completion_tokens });
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
  const before = current.answeredAt;
  current.answeredAt = current.shown; // the next prompt comes after this answer's message
  $("input-form").hidden = true;
  try {
    await api(`tasks/${current.id}/input`, { method: "POST", body: { text } });
    $("input-text").value = "";
  } catch (error) {
    current.answeredAt = before;
    $("input-form").hidden = false;
    notice(`Could not send the answer: ${error.message}`);
  }
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
