// The dashboard's page: polls the JSON routes (/api/v0/..., /api/jobs/...) and renders the
// current view. Plain DOM calls, no framework and no build step. Every value from the cluster
// goes in as text (textContent), never as HTML: actor names and job logs are user data.
"use strict";

const TOKEN_KEY = "actorhub.dashboard.token";
const POLL_MS = 1500;

class AuthError extends Error {}

// ---- talking to the server -------------------------------------------------------------------

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null; // not JSON: the status says enough
  }
  if (response.status === 401) {
    throw new AuthError((body && body.error) || "the token was refused");
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${path} answered ${response.status}`);
  }
  return body;
}

// ---- small DOM helpers -----------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function link(href, text, props) {
  return el("a", { href, ...props }, text);
}

function table(name, headers, rows, emptyText) {
  if (!rows.length) return el("p", { class: "muted", dataset: { table: name } }, emptyText);
  const head = el("tr", null, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)));
  const body = rows.map((row) => el("tr", { dataset: { id: row.id } },
    row.cells.map((cell, i) => el("td", { class: headers[i].num ? "num" : null }, cell))));
  return el("table", { dataset: { table: name } }, el("thead", null, head), el("tbody", null, body));
}

function fields(pairs) {
  return el("dl", { class: "fields" }, pairs.map(([name, value]) => [el("dt", null, name), el("dd", null, value)]));
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function amount(resource, value) {
  return resource === "memory" || resource === "object_store_memory" ? bytes(value) : `${+value.toFixed(2)}`;
}

function usage(used, total, format) {
  const share = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return el("span", { class: "usage" },
    el("span", { class: "bar" }, el("div", { style: `width: ${share.toFixed(0)}%` })),
    `${format(used)} / ${format(total)}`);
}

function resourceUsage(node, resource) {
  const total = node.resources_total[resource];
  if (total === undefined) return "-";
  const used = total - (node.resources_available[resource] || 0);
  return usage(used, total, (v) => amount(resource, v));
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "-";
}

function ago(seconds) {
  if (!seconds) return "never";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  return delta < 90 ? `${delta.toFixed(0)} s ago` : `${(delta / 60).toFixed(0)} min ago`;
}

function short(id) {
  return id ? id.slice(0, 12) : "-";
}

function nodeLink(nodeId) {
  return nodeId ? link(`#/nodes/${encodeURIComponent(nodeId)}`, short(nodeId), { class: "mono", title: nodeId }) : "-";
}

function actorLink(actorId) {
  return link(`#/actors/${encodeURIComponent(actorId)}`, short(actorId), { class: "mono", title: actorId });
}

function counts(pairs) {
  return el("div", { class: "counts" },
    pairs.map(([name, value]) => el("div", { class: "count", dataset: { count: name } }, el("b", null, value), name)));
}

// ---- the views: each loads its data, then renders it -----------------------------------------

const ENDED_JOB_STATES = new Set(["SUCCEEDED", "FAILED", "STOPPED"]);
const endedJobLogs = new Map(); // submission id -> its whole log, once the job has ended

const views = {
  nodes: {
    load: () => api("/api/v0/nodes"),
    render: (data) => [
      el("h2", null, "Nodes"),
      table("nodes", ["Node", "Address", "State", "CPU", "GPU", "Memory", "Object store", "Objects"],
        data.result.map((n) => ({
          id: n.node_id,
          cells: [
            [nodeLink(n.node_id), n.is_head ? " (head)" : ""],
            n.address, stateBadge(n.alive ? (n.drain_state || "alive") : "dead"),
            resourceUsage(n, "CPU"), resourceUsage(n, "GPU"), resourceUsage(n, "memory"),
            n.object_store ? usage(n.object_store.used, n.object_store.capacity, bytes) : "-",
            n.object_store ? n.object_store.objects : "-",
          ],
        })), "No nodes."),
    ],
  },

  node: {
    load: (id) => api(`/api/v0/nodes/${encodeURIComponent(id)}`),
    render: (data) => {
      const n = data.node;
      const resources = Object.keys(n.resources_total).sort();
      return [
        el("h2", null, "Node ", el("span", { class: "mono" }, n.node_id), n.is_head ? " (head)" : ""),
        fields([
          ["State", stateBadge(n.alive ? (n.drain_state || "alive") : "dead")],
          ["Address", n.address],
          ["Node agent pid", n.pid || "-"],
          ["Last heartbeat", ago(n.last_heartbeat)],
          ["Metrics", n.metrics_export_port ? `${n.address.split(":")[0]}:${n.metrics_export_port}/metrics` : "-"],
          ["Object store", n.object_store
            ? [usage(n.object_store.used, n.object_store.capacity, bytes),
              ` ${n.object_store.objects} objects, ${bytes(n.object_store.spilled)} spilled`]
            : "-"],
        ]),
        el("h3", null, "Resources"),
        table("node-resources", ["Resource", "Used", { label: "Available", num: true }, { label: "Total", num: true }],
          resources.map((r) => ({
            id: r,
            cells: [r, resourceUsage(n, r), amount(r, n.resources_available[r] || 0), amount(r, n.resources_total[r])],
          })), "No resources."),
        el("h3", null, "Actors on this node"),
        actorTable("node-actors", data.actors),
        el("h3", null, "Tasks run on this node"),
        taskTable("node-tasks", data.tasks),
      ];
    },
  },

  actors: {
    load: () => api("/api/v0/actors"),
    render: (data) => [
      el("h2", null, "Actors"),
      actorTable("actors", data.result.filter((a) => !a.system)),
      el("h3", null, "actorhub's own actors"),
      el("p", { class: "muted" }, "Lease desks and task executors, in the system namespace."),
      actorTable("system-actors", data.result.filter((a) => a.system)),
    ],
  },

  actor: {
    load: (id) => api(`/api/v0/actors/${encodeURIComponent(id)}`),
    render: (data) => {
      const a = data.actor;
      return [
        el("h2", null, `Actor ${a.class_name}`, a.name ? ` "${a.name}"` : ""),
        fields([
          ["Actor id", el("span", { class: "mono" }, a.actor_id)],
          ["State", stateBadge(a.state)],
          ["Class", a.class_name],
          ["Name", a.name || "-"],
          ["Namespace", a.namespace],
          ["Node", nodeLink(a.node_id)],
          ["Pid", a.pid || "-"],
          ["Address", a.address || "-"],
          ["Restarts", a.num_restarts],
          ["Incarnation", a.incarnation],
          ["Death cause", a.death_cause || "-"],
          ["Not placed because", a.pending_reason ? `${a.pending_reason}${a.infeasible ? " (infeasible)" : ""}` : "-"],
          ["Owner job", a.owner_job_id || "-"],
          ["Lifetime", a.detached ? "detached" : "ends with its owner"],
          ["Kind", a.is_async ? "async" : "sync"],
          ["Methods", a.methods.join(", ") || "-"],
        ]),
      ];
    },
  },

  tasks: {
    load: () => api("/api/v0/tasks"),
    render: (data) => {
      const sum = (field) => data.result.reduce((total, t) => total + t[field], 0);
      return [
        el("h2", null, "Tasks"),
        counts([["RUNNING", sum("running")], ["FINISHED", sum("finished")], ["FAILED", sum("failed")]]),
        el("p", { class: "muted" }, "As the executors count them: a task appears once it reached a node."),
        taskTable("tasks", data.result),
      ];
    },
  },

  objects: {
    load: () => api("/api/v0/objects"),
    render: (data) => [
      el("h2", null, "Objects"),
      data.unreachable.length
        ? el("p", { class: "error" }, `Did not answer (their objects are missing here): ${data.unreachable.join(", ")}`)
        : null,
      table("objects", ["Object", { label: "Size", num: true }, "Owner", "Where", "Stored on", "References"],
        data.result.map((o) => ({
          id: o.object_id,
          cells: [
            el("span", { class: "mono", title: o.object_id }, o.object_id),
            bytes(o.size),
            o.owner_actor_id ? [`${o.owner.split(" ")[0]} actor `, actorLink(o.owner_actor_id)] : o.owner,
            o.where,
            o.stored_on.length ? o.stored_on.map((id) => [nodeLink(id), " "]) : "-",
            references(o),
          ],
        })), "No objects."),
    ],
  },

  jobs: {
    load: () => api("/api/jobs/"),
    render: (jobs) => [
      el("h2", null, "Jobs"),
      table("jobs", ["Submission", "Status", "Entrypoint", "Driver job", "Started", "Ended"],
        jobs.slice().sort((a, b) => (b.start_time || 0) - (a.start_time || 0)).map((j) => ({
          id: j.submission_id,
          cells: [
            link(`#/jobs/${encodeURIComponent(j.submission_id)}`, j.submission_id, { class: "mono" }),
            stateBadge(j.status), el("code", null, j.entrypoint), j.job_id || "-", time(j.start_time), time(j.end_time),
          ],
        })), "No jobs submitted. Submit one with `actorhub job submit -- CMD` or JobSubmissionClient."),
    ],
  },

  job: {
    load: async (id) => {
      const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
      // An ended job's log no longer changes: read once, not at every poll.
      let logs = endedJobLogs.get(id);
      if (logs === undefined) {
        logs = (await api(`/api/jobs/${encodeURIComponent(id)}/logs`)).logs;
        if (ENDED_JOB_STATES.has(job.status)) endedJobLogs.set(id, logs);
      }
      return { job, logs };
    },
    render: (data) => {
      const j = data.job;
      return [
        el("h2", null, "Job ", el("span", { class: "mono" }, j.submission_id)),
        fields([
          ["Status", stateBadge(j.status)],
          ["Entrypoint", el("code", null, j.entrypoint)],
          ["Driver job id", j.job_id || "-"],
          ["Started", time(j.start_time)],
          ["Ended", time(j.end_time)],
          ["Exit code", j.driver_exit_code ?? "-"],
          ["Message", j.message || "-"],
          ["Metadata", j.metadata && Object.keys(j.metadata).length ? JSON.stringify(j.metadata) : "-"],
          ["Runtime env", j.runtime_env && Object.keys(j.runtime_env).length ? JSON.stringify(j.runtime_env) : "-"],
        ]),
        el("h3", null, "Logs"),
        el("pre", { class: "logs", id: "job-logs", dataset: { keepScroll: "job-logs" } }, data.logs || "(no output yet)"),
      ];
    },
  },

  "placement-groups": {
    load: () => api("/api/v0/placement_groups"),
    render: (data) => [
      el("h2", null, "Placement groups"),
      table("placement-groups", ["Group", "Name", "Strategy", "State", "Bundles", "Why not created"],
        data.result.map((g) => ({
          id: g.placement_group_id,
          cells: [
            el("span", { class: "mono" }, g.placement_group_id), g.name || "-", g.strategy, stateBadge(g.state),
            el("ol", null, g.bundles.map((bundle, i) => el("li", null,
              Object.entries(bundle).map(([r, v]) => `${r} ${amount(r, v)}`).join(", "), " on ",
              nodeLink(g.bundle_node_ids[i])))),
            g.pending_reason || "-",
          ],
        })), "No placement groups."),
    ],
  },
};

function actorTable(name, actors) {
  return table(name, ["Actor", "Class", "Name", "Namespace", "State", "Node", "Pid", { label: "Restarts", num: true },
    "Death cause"],
  actors.map((a) => ({
    id: a.actor_id,
    cells: [actorLink(a.actor_id), a.class_name, a.name || "-", a.namespace, stateBadge(a.state), nodeLink(a.node_id),
      a.pid || "-", a.num_restarts, a.death_cause || (a.pending_reason ? `waiting: ${a.pending_reason}` : "-")],
  })), "No actors.");
}

function taskTable(name, tasks) {
  return table(name, ["Task", "Node", { label: "Running", num: true }, { label: "Finished", num: true },
    { label: "Failed", num: true }],
  tasks.map((t) => ({
    id: `${t.name}@${t.node_id}`,
    cells: [el("code", null, t.name), nodeLink(t.node_id), t.running, t.finished, t.failed],
  })), "No tasks have run.");
}

function references(o) {
  const parts = [];
  if (o.local_refs) parts.push(`owner x${o.local_refs}`);
  for (const [borrower, count] of Object.entries(o.borrowers)) parts.push(`${borrower} x${count}`);
  return parts.join(", ") || "-";
}

// ---- the header: the cluster in one line -----------------------------------------------------

function renderSummary(summary) {
  const line = (label, byState) => {
    const entries = Object.entries(byState).filter(([, n]) => n > 0);
    return el("span", { dataset: { summary: label } }, `${label}: `,
      entries.length ? entries.map(([state, n], i) => [i ? ", " : "", `${n} `, stateBadge(state)]) : "none");
  };
  document.getElementById("summary").replaceChildren(
    el("span", { dataset: { summary: "nodes" } }, `Nodes: ${summary.nodes.alive} alive`,
      summary.nodes.dead ? `, ${summary.nodes.dead} dead` : ""),
    line("Actors", summary.actors), line("Tasks", summary.tasks), line("Jobs", summary.jobs),
    summary.placement_groups ? el("span", null, `Placement groups: ${summary.placement_groups}`) : null,
  );
  const groupsTab = document.querySelector('nav a[data-view="placement-groups"]');
  groupsTab.hidden = summary.placement_groups === 0 && currentRoute().view !== "placement-groups";
}

// ---- routing and polling ---------------------------------------------------------------------

// #/nodes, #/nodes/<id>, #/actors, #/actors/<id>, #/tasks, #/objects, #/jobs, #/jobs/<id>, #/placement-groups
const DETAIL_VIEWS = { nodes: "node", actors: "actor", jobs: "job" };

function currentRoute() {
  const [tab, id] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const list = views[tab] && !Object.values(DETAIL_VIEWS).includes(tab) ? tab : "nodes";
  if (id && DETAIL_VIEWS[list]) return { tab: list, view: DETAIL_VIEWS[list], id };
  return { tab: list, view: list, id: null };
}

let generation = 0; // a newer navigation makes older answers stale
let timer = null;
let shown = ""; // what the view shows, so an unchanged answer leaves the DOM (and a text selection) alone

function renderView(route, data) {
  const key = JSON.stringify([route, data]);
  if (key === shown) return;
  shown = key;
  const view = document.getElementById("view");
  const scrolls = {};
  for (const node of view.querySelectorAll("[data-keep-scroll]")) {
    const atBottom = node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
    scrolls[node.dataset.keepScroll] = atBottom ? Infinity : node.scrollTop;
  }
  view.replaceChildren(el("div", null, views[route.view].render(data)));
  for (const node of view.querySelectorAll("[data-keep-scroll]")) {
    const top = scrolls[node.dataset.keepScroll];
    // A log followed at its end keeps following it; one scrolled up stays where it was read.
    node.scrollTop = top === undefined || top === Infinity ? node.scrollHeight : top;
  }
}

async function refresh() {
  const mine = ++generation;
  clearTimeout(timer);
  if (document.hidden) return; // a tab nobody looks at asks nothing; showing it again refreshes
  const route = currentRoute();
  for (const tab of document.querySelectorAll("nav a[data-view]")) {
    tab.classList.toggle("active", tab.dataset.view === route.tab);
  }
  try {
    const [summary, data] = await Promise.all([api("/api/v0/cluster"), views[route.view].load(route.id)]);
    if (mine !== generation) return;
    renderSummary(summary);
    renderView(route, data);
    showError(null);
    document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof AuthError) {
      askForToken(`The dashboard refused the token: ${err.message}. Enter the cluster's token.`);
      return;
    }
    showError(err.message);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function showError(message) {
  const box = document.getElementById("error");
  box.hidden = !message;
  box.textContent = message || "";
}

// ---- the token -------------------------------------------------------------------------------

function askForToken(message) {
  generation += 1;
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  shown = "";
  document.getElementById("view").hidden = true;
  document.getElementById("tabs").hidden = true;
  document.getElementById("summary").replaceChildren();
  showError(null);
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("login").hidden = false;
  document.getElementById("token").focus();
}

function showDashboard() {
  document.getElementById("login").hidden = true;
  document.getElementById("tabs").hidden = false;
  document.getElementById("view").hidden = false;
  refresh();
}

function start() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showDashboard();
  });
  document.getElementById("logout").addEventListener("click", () => askForToken(null));
  const refreshIfIn = () => {
    if (sessionStorage.getItem(TOKEN_KEY)) refresh();
  };
  window.addEventListener("hashchange", refreshIfIn);
  document.addEventListener("visibilitychange", refreshIfIn);
  if (sessionStorage.getItem(TOKEN_KEY)) showDashboard();
  else askForToken(null);
}

start();
