'use strict';
// The QleetOS web console: plain DOM, no framework, no build step. Every call goes to the
// gateway's /v1 API with the user's bearer token, so Kubernetes RBAC decides what is shown.
// Text is only ever set as text: names and messages come from users and never become markup.

const TOKEN_KEY = 'qleetos.token';
const NAMESPACE_KEY = 'qleetos.namespace';
const POLL_MS = 5000;
const RECONNECT_MS = 2000;

const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  namespace: () => sessionStorage.getItem(NAMESPACE_KEY) || 'default',
  setNamespace: (namespace) => sessionStorage.setItem(NAMESPACE_KEY, namespace),
  start(token, namespace) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.setNamespace(namespace);
  },
  end: () => sessionStorage.removeItem(TOKEN_KEY),
};

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `the gateway answered HTTP ${status}`);
    this.status = status;
    this.reason = body.reason || '';
  }
}

// ------------------------------------------------------------------ DOM and HTTP helpers

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

const main = () => document.getElementById('main');
const segment = encodeURIComponent;

async function bodyOf(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : {};
  } catch (_) {
    return { message: text };
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${session.token()}` }, options.headers);
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = await bodyOf(response);
  if (response.status === 401) {
    session.end();
    showLogin('The gateway no longer accepts this token: log in again.');
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// An object the user may not be allowed to read, or that may be gone: `{ error }` then.
async function optional(path) {
  try {
    return { object: await api(path) };
  } catch (error) {
    if (error.status === 401) throw error;
    return { error };
  }
}

// Follows a server-sent event stream. EventSource cannot send a bearer token, so this reads
// the stream through fetch and splits it into events itself.
async function follow(path, signal, onEvent) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${session.token()}`, Accept: 'text/event-stream' },
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await bodyOf(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(event, JSON.parse(data.join('\n')));
    }
  }
}

// ------------------------------------------------------------------ views and routing

// The view on screen; replacing it stops its timers and streams.
let current = null;

function startView() {
  if (current) {
    current.controller.abort();
    current.timers.forEach(clearInterval);
  }
  current = { controller: new AbortController(), timers: [] };
  return current;
}

function every(view, ms, work) {
  work();
  view.timers.push(setInterval(work, ms));
}

function route() {
  const view = startView();
  if (!session.token()) return showLogin();
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  if (parts[0] === 'runtimes') return showRuntimes(view);
  if (parts[0] === 'namespaces' && parts[1]) session.setNamespace(parts[1]);
  document.getElementById('namespace').value = session.namespace();
  if (parts[0] === 'namespaces' && parts[2] === 'workloads' && parts[3]) {
    return showWorkload(view, parts[1], parts[3]);
  }
  return showWorkloads(view, session.namespace());
}

function problem(error) {
  const text = error.status === 403 ? `Not allowed: ${error.message}` : error.message;
  return el('p', { class: 'error', id: 'view-error', 'data-status': error.status }, text);
}

// The class of every reason QleetOS writes, served by the gateway as reasons.js.
const REASON_CLASSES = self.QLEET_REASON_CLASSES || {};

// The badge state of an object that is not Ready: `Failed` when its reason's class is Failed
// (an unknown reason too, as in the operator), else `Waiting`. Without the classes (reasons.js
// did not load) everything not Ready reads as Waiting, as before.
function notReady(reason) {
  if (!Object.keys(REASON_CLASSES).length) return 'Waiting';
  return (REASON_CLASSES[reason] || 'Failed') === 'Failed' ? 'Failed' : 'Waiting';
}

function badge(state, text) {
  return el('span', { class: 'badge', 'data-state': state }, text || state);
}

function readyCondition(object) {
  return ((object.status || {}).conditions || []).find((c) => c.type === 'Ready');
}

function readiness(object) {
  const ready = readyCondition(object);
  if (!ready) return badge('Pending', 'Unknown');
  return ready.status === 'True' ? badge('Ready') : badge(notReady(ready.reason), ready.reason || 'Not ready');
}

// ------------------------------------------------------------------ log in

function showLogin(message) {
  startView();
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  const token = el('textarea', { id: 'token', rows: 4, autocomplete: 'off', spellcheck: 'false', required: true });
  const namespace = el('input', { id: 'login-namespace', value: session.namespace(), spellcheck: 'false' });
  const failure = el('p', { class: 'error', id: 'login-error', hidden: !message }, message || '');
  const form = el('form', { id: 'login' },
    el('h1', {}, 'Log in to QleetOS'),
    el('p', { class: 'muted' }, 'Paste a bearer token the management cluster accepts (for example from ',
      el('code', {}, 'kubectl create token NAME'), '). You see exactly what its RBAC lets it see. ',
      'The token is kept only in this tab.'),
    el('label', {}, 'Token', token),
    el('label', {}, 'Namespace', namespace),
    el('button', { type: 'submit', id: 'login-submit' }, 'Log in'),
    failure);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    session.start(token.value.trim(), namespace.value.trim() || 'default');
    try {
      await greet();
      const target = `#/namespaces/${segment(session.namespace())}/workloads`;
      if (location.hash === target) route();
      else location.hash = target;
    } catch (error) {
      session.end();
      failure.hidden = false;
      failure.textContent = error.status === 401
        ? 'The gateway did not accept this token.'
        : `Could not log in: ${error.message}`;
    }
  });
  main().replaceChildren(form);
}

async function greet() {
  const me = await api('/v1/whoami');
  document.getElementById('who').textContent = `Logged in as ${me.username}`;
}

// ------------------------------------------------------------------ workloads

function placementBadges(workload) {
  const placements = (workload.status || {}).placements || [];
  if (!placements.length) return el('span', { class: 'muted' }, 'not placed yet');
  return placements.map((p) => badge(p.ready ? 'Ready' : notReady(p.reason),
    `${p.runtime} · ${p.region} · ${p.ready ? 'Ready' : p.reason || 'waiting'}`));
}

function images(workload) {
  return Object.entries(workload.spec.images || {}).map(([c, i]) => el('div', {}, `${c}=${i}`));
}

function showWorkloads(view, namespace) {
  const body = el('tbody');
  const state = el('div', { id: 'view-state' });
  main().replaceChildren(
    el('h1', {}, 'Workloads in ', el('code', {}, namespace)),
    state,
    el('table', { id: 'workloads' },
      el('thead', {}, el('tr', {}, ['Name', 'Ready', 'Placements', 'Images'].map((h) => el('th', {}, h)))),
      body));
  every(view, POLL_MS, async () => {
    try {
      const list = await api(`/v1/namespaces/${segment(namespace)}/workloads`);
      if (view !== current) return;
      state.replaceChildren(list.items.length ? '' : el('p', { class: 'muted' }, 'No Workloads in this namespace.'));
      body.replaceChildren(...list.items.map((w) => el('tr', { 'data-workload': w.metadata.name },
        el('td', {}, el('a', { href: `#/namespaces/${segment(namespace)}/workloads/${segment(w.metadata.name)}` }, w.metadata.name)),
        el('td', {}, readiness(w)),
        el('td', {}, placementBadges(w)),
        el('td', {}, images(w)))));
    } catch (error) {
      if (view !== current) return;
      body.replaceChildren();
      state.replaceChildren(problem(error));
    }
  });
}

// ------------------------------------------------------------------ runtimes

function showRuntimes(view) {
  const body = el('tbody');
  const state = el('div', { id: 'view-state' });
  const headings = ['Name', 'Region', 'Provider', 'Version', 'Nodes', 'CPU used', 'Cost / h', 'Ready', 'Message'];
  const total = el('p', { id: 'runtimes-total' });
  main().replaceChildren(el('h1', {}, 'Runtimes'), state,
    el('table', { id: 'runtimes' }, el('thead', {}, el('tr', {}, headings.map((h) => el('th', {}, h)))), body),
    total);
  every(view, POLL_MS, async () => {
    try {
      const list = await api('/v1/runtimes');
      if (view !== current) return;
      state.replaceChildren();
      body.replaceChildren(...list.items.map((r) => {
        const status = r.status || {};
        const phase = (status.provisioning || {}).phase;
        const capacity = status.capacity || {};
        return el('tr', { 'data-runtime': r.metadata.name },
          el('td', {}, r.metadata.name), el('td', {}, r.spec.region), el('td', {}, r.spec.provider),
          el('td', {}, status.serverVersion || ''), el('td', {}, status.nodeCount ?? ''),
          el('td', { class: 'cpu' }, cpuUsed(capacity)), el('td', { class: 'cost' }, capacity.costPerHour || ''),
          el('td', {}, readiness(r)),
          el('td', {}, [phase && `provisioning: ${phase}`, status.message].filter(Boolean).join('; ')));
      }));
      total.replaceChildren(totals(list.items));
    } catch (error) {
      if (view !== current) return;
      body.replaceChildren();
      state.replaceChildren(problem(error));
    }
  });
}

// Requested of allocatable CPU, e.g. `34.0 / 64`.
function cpuUsed(capacity) {
  if (!capacity.allocatable) return '';
  const cpus = (resources) => resources.cpuMillicores / 1000;
  return `${cpus(capacity.requested).toFixed(1)} / ${cpus(capacity.allocatable).toFixed(0)}`;
}

// Capacity used and cost over every runtime listed.
function totals(runtimes) {
  const capacities = runtimes.map((r) => (r.status || {}).capacity).filter(Boolean);
  const sum = (pick) => capacities.reduce((acc, c) => acc + pick(c), 0);
  const requested = sum((c) => c.requested.cpuMillicores) / 1000;
  const allocatable = sum((c) => c.allocatable.cpuMillicores) / 1000;
  const priced = capacities.filter((c) => c.costPerHour);
  const cost = priced.length ? `, costing ${sum((c) => Number(c.costPerHour || 0)).toFixed(4)} per hour` : '';
  return `${runtimes.length} runtimes: ${requested.toFixed(1)} of ${allocatable.toFixed(0)} CPUs requested${cost}`;
}

// ------------------------------------------------------------------ one workload

function node(kind, state, title, ...details) {
  return el('div', { class: 'node', 'data-kind': kind, 'data-state': state },
    el('div', { class: 'title' }, title, ' ', badge(state)),
    details.filter(Boolean).map((d) => el('div', { class: 'detail' }, d)));
}

function clusterNode(placement, runtime) {
  if (runtime.error) {
    return node('Runtime', 'Unknown', placement.runtime, `region ${placement.region}`,
      runtime.error.status === 403 ? 'you may not read this runtime' : runtime.error.message);
  }
  const status = runtime.object.status || {};
  const ready = readyCondition(runtime.object);
  const state = !ready ? 'Waiting' : ready.status === 'True' ? 'Ready' : notReady(ready.reason);
  const phase = (status.provisioning || {}).phase;
  return node('Runtime', state, placement.runtime,
    `${runtime.object.spec.provider} · region ${placement.region}`,
    status.serverVersion && `${status.serverVersion}, ${status.nodeCount ?? '?'} nodes`,
    phase && `provisioning: ${phase}`,
    state !== 'Ready' && ready && ready.message);
}

function dependencyNode(dependency) {
  const provider = dependency.name ? `${dependency.kind} ${dependency.name}` : 'nothing provides it';
  return el('div', { class: 'node', 'data-kind': dependency.kind, 'data-state': dependency.state,
    'data-capability': dependency.capability },
  el('div', { class: 'title' }, dependency.capability, ' ', badge(dependency.state)),
  el('div', { class: 'detail' }, provider),
  dependency.message && el('div', { class: 'detail' }, dependency.message));
}

function workloadNode(name, placement) {
  const state = placement.ready ? 'Ready' : notReady(placement.reason);
  return node('Workload', state, name,
    !placement.ready && `${placement.reason}: ${placement.message}`,
    ...(placement.urls || []),
    placement.replaces && `stands in for ${placement.replaces}`);
}

function waitsOn(placement, runtime, dependencies) {
  if (placement.ready) return 'Ready: nothing to wait for.';
  const cluster = runtime.object && readyCondition(runtime.object);
  if (cluster && cluster.status !== 'True') return `Waits on the cluster ${placement.runtime}: ${cluster.message}`;
  const blocking = dependencies.filter((d) => d.state !== 'Ready');
  if (blocking.length) {
    return 'Waits on ' + blocking.map((d) => `${d.capability} (${d.state}${d.message ? `: ${d.message}` : ''})`).join('; ');
  }
  return `Waits on the workload itself: ${placement.reason}: ${placement.message}`;
}

function column(title, nodes) {
  return el('div', { class: 'column' }, el('h3', {}, title),
    nodes.length ? nodes : el('div', { class: 'muted' }, 'none'));
}

function graph(name, { placement, runtime, instance }) {
  const dependencies = (((instance.object || {}).status) || {}).dependencies || [];
  const support = dependencies.filter((d) => d.kind === 'SupportService');
  const services = dependencies.filter((d) => d.kind !== 'SupportService');
  return el('section', { class: 'placement', 'data-runtime': placement.runtime },
    el('h3', {}, `${placement.runtime} (region ${placement.region})`),
    el('p', { class: 'waits' }, waitsOn(placement, runtime, dependencies)),
    el('div', { class: 'graph' },
      column('Cluster', [clusterNode(placement, runtime)]),
      column('Support services', support.map(dependencyNode)),
      column('Services', services.map(dependencyNode)),
      column('Workload', [workloadNode(name, placement)])));
}

async function loadPlacements(namespace, workload) {
  const placements = (workload.status || {}).placements || [];
  return Promise.all(placements.map(async (placement) => ({
    placement,
    runtime: await optional(`/v1/runtimes/${segment(placement.runtime)}`),
    instance: placement.instance
      ? await optional(`/v1/namespaces/${segment(namespace)}/workloadinstances/${segment(placement.instance)}`)
      : { error: new ApiError(404, { message: 'no instance yet' }) },
  })));
}

// A plan as a tree: each runtime (and what it provisions), its support services, and each
// object with its action and changed fields. Secret values arrive redacted from the operator.
function planView(plan, id) {
  const placements = plan.placements || [];
  return el('section', { id, class: 'plan' },
    el('p', {}, el('strong', {}, 'Plan: '), plan.summary || 'no change'),
    placements.map((p) => el('div', { class: 'plan-runtime', 'data-runtime': p.runtime },
      el('h3', {}, `${p.runtime}${p.region ? ` (region ${p.region})` : ''} `,
        p.action !== 'Unchanged' && badge(p.action === 'Delete' ? 'Failed' : 'Pending',
          p.profile ? `${p.action.toLowerCase()} from ${p.profile}` : p.action.toLowerCase())),
      p.message && el('p', { class: 'muted' }, p.message),
      el('ul', {},
        (p.supportServices || []).map((s) => el('li', { 'data-action': s.action },
          badge(s.action === 'Install' ? 'Pending' : 'Ready', s.action.toLowerCase()),
          `support service ${s.name} (${s.capability} from ${s.profile})`)),
        (p.objects || []).map((o) => el('li', { 'data-action': o.action, 'data-kind': o.kind },
          badge(o.action === 'Refused' || o.action === 'Delete' ? 'Failed'
            : o.action === 'Unchanged' ? 'Ready' : 'Pending', o.action.toLowerCase()),
          `${o.kind} ${o.namespace ? `${o.namespace}/` : ''}${o.name}`,
          o.message && el('div', { class: 'muted' }, o.message),
          (o.changes || []).length > 0 && el('table', { class: 'changes' }, el('tbody', {},
            o.changes.map((c) => el('tr', {}, el('td', {}, el('code', {}, c.path)),
              el('td', {}, c.before ?? '(absent)'), el('td', {}, '→'), el('td', {}, c.after ?? '(absent)')))))))))));
}

// The staged rollout: its phase and wave, and each placement's wave and revision.
function rolloutView(status) {
  const rollout = status.rollout;
  if (!rollout) return null;
  const state = rollout.phase === 'Complete' ? 'Ready'
    : ['Halted', 'RolledBack'].includes(rollout.phase) ? 'Failed' : 'Waiting';
  const wave = rollout.wave > rollout.waves ? `all ${rollout.waves} waves` : `wave ${rollout.wave} of ${rollout.waves}`;
  return el('section', { id: 'rollout', 'data-phase': rollout.phase },
    el('h2', {}, 'Rollout'),
    el('p', {}, badge(state, rollout.phase), ` revision ${rollout.revision} (stable ${rollout.stableRevision}), ${wave}`,
      rollout.message && ` — ${rollout.message}`),
    el('table', {}, el('thead', {}, el('tr', {}, ['Wave', 'Runtime', 'Revision', 'Ready'].map((h) => el('th', {}, h)))),
      el('tbody', {}, [...(status.placements || [])].sort((a, b) => (a.wave || 0) - (b.wave || 0))
        .map((p) => el('tr', { 'data-wave': p.wave ?? '' }, el('td', {}, `${p.wave ?? ''}`), el('td', {}, p.runtime),
          el('td', {}, `${p.revision ?? ''}`), el('td', {}, badge(p.ready ? 'Ready' : notReady(p.reason),
            p.ready ? 'Ready' : p.reason || 'waiting')))))));
}

// A plan waiting for approval (`spec.approval: Required`), with the Approve action for users
// RBAC lets patch the Workload.
function approvalView(path, status) {
  const approval = status.approval;
  if (!approval || approval.state !== 'Pending') return null;
  // Kept by the view, outside what each refresh redraws, so the answer stays on screen.
  const result = current.approveResult;
  const approve = current.canPatch
    && el('button', { type: 'button', id: 'approve' }, `Approve generation ${approval.generation}`);
  if (approve) {
    approve.addEventListener('click', async () => {
      result.hidden = false;
      try {
        const answer = await api(`${path}/approve`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ generation: approval.generation }),
        });
        result.className = 'notice';
        result.textContent = `Approved the plan of generation ${answer.generation}; applying it.`;
      } catch (error) {
        result.className = 'error';
        result.textContent = `Not approved: ${error.message}`;
      }
    });
  }
  return el('section', { id: 'approval' },
    el('h2', {}, `Plan of generation ${approval.generation} waits for approval`),
    approval.message && el('p', { class: 'muted' }, approval.message),
    planView(approval, 'pending-plan'), approve);
}

function summary(path, workload) {
  const status = workload.status || {};
  const conditions = status.conditions || [];
  return el('section', { id: 'summary' },
    el('p', {}, readiness(workload), ` generation ${workload.metadata.generation}`,
      `, status of ${status.observedGeneration ?? 'none yet'}`),
    el('table', {}, el('tbody', {}, conditions.map((c) => el('tr', { 'data-condition': c.type },
      el('td', {}, c.type), el('td', {}, c.status), el('td', {}, c.reason), el('td', {}, c.message))))),
    el('h2', {}, 'Images'),
    Object.keys(workload.spec.images || {}).length ? el('div', { id: 'images-now' }, images(workload))
      : el('p', { class: 'muted' }, 'No image overrides in spec.images: the manifests\' own images run.'),
    rolloutView(status),
    approvalView(path, status));
}

function showWorkload(view, namespace, name) {
  const path = `/v1/namespaces/${segment(namespace)}/workloads/${segment(name)}`;
  const live = el('span', { class: 'live', id: 'live', 'data-live': 'false' }, 'connecting…');
  const detail = el('div', { id: 'detail' });
  const actions = el('section', { id: 'actions' });
  view.approveResult = el('p', { id: 'approve-result', hidden: true });
  main().replaceChildren(el('h1', {}, 'Workload ', el('code', {}, `${namespace}/${name}`), live), detail,
    view.approveResult, actions);
  let latest = 0;
  const refresh = async () => {
    const ticket = ++latest;
    try {
      const workload = await api(path);
      const placements = await loadPlacements(namespace, workload);
      if (view !== current || ticket !== latest) return;
      detail.replaceChildren(summary(path, workload), el('h2', {}, 'Dependency graph'),
        ...(placements.length ? placements.map((p) => graph(name, p))
          : [el('p', { class: 'muted' }, 'Not placed yet.')]));
    } catch (error) {
      if (view !== current || ticket !== latest) return;
      detail.replaceChildren(problem(error));
      actions.replaceChildren();
    }
  };
  every(view, POLL_MS, refresh);
  stream(view, `${path}/watch`, live, refresh, detail);
  offerImageUpdate(path, actions, refresh);
}

// Re-reads everything on each status event; the poll catches what the Workload's own status
// does not show (a dependency's message).
async function stream(view, path, live, refresh, detail) {
  while (view === current) {
    try {
      await follow(path, view.controller.signal, (event, data) => {
        live.dataset.live = 'true';
        live.textContent = 'live';
        if (event === 'status') refresh();
        if (event === 'deleted') detail.replaceChildren(el('p', { class: 'notice' }, 'This Workload was deleted.'));
      });
    } catch (error) {
      if (view !== current) return;
      if (error.status === 403 || error.status === 404) {
        live.textContent = '';
        return;
      }
    }
    live.dataset.live = 'false';
    live.textContent = 'reconnecting…';
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

async function offerImageUpdate(path, actions, refresh) {
  let permissions;
  try {
    permissions = await api(`${path}/permissions`);
  } catch (_) {
    return;
  }
  if (!permissions.get) return;
  if (current) current.canPatch = permissions.patch;
  if (!permissions.patch) {
    actions.replaceChildren(el('p', { class: 'muted', id: 'images-readonly' },
      'You may not change this Workload (RBAC does not allow patch), so the image update is not offered.'));
    return;
  }
  const container = el('input', { id: 'image-container', required: true, spellcheck: 'false' });
  const image = el('input', { id: 'image-value', required: true, size: 40, spellcheck: 'false' });
  const result = el('p', { id: 'images-result', hidden: true });
  const planned = el('div', { id: 'plan-result' });
  const planButton = el('button', { type: 'button', id: 'images-plan' }, 'Plan');
  const form = el('form', { id: 'images' },
    el('label', {}, 'Container', container), el('label', {}, 'Image', image),
    planButton, el('button', { type: 'submit', id: 'images-submit' }, 'Set image'));
  planButton.addEventListener('click', async () => {
    result.hidden = true;
    planned.replaceChildren(el('p', { class: 'muted' }, 'Planning…'));
    try {
      const workload = await api(path);
      const spec = Object.assign({}, workload.spec, {
        images: Object.assign({}, workload.spec.images, { [container.value.trim()]: image.value.trim() }),
      });
      const plan = await api(`${path}/plan`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ spec }),
      });
      planned.replaceChildren(planView(plan, 'plan'));
    } catch (error) {
      planned.replaceChildren(el('p', { class: 'error', id: 'plan-error' }, `No plan: ${error.message}`));
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.hidden = false;
    try {
      const answer = await api(`${path}/images`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ images: { [container.value.trim()]: image.value.trim() } }),
      });
      result.className = 'notice';
      result.textContent = `Set ${container.value.trim()}=${image.value.trim()} (generation ${answer.generation}); rolling out.`;
      refresh();
    } catch (error) {
      result.className = 'error';
      result.textContent = `Not changed: ${error.message}`;
    }
  });
  actions.replaceChildren(el('h2', {}, 'Update an image'),
    el('p', { class: 'muted' }, 'Plan shows what the change would do in each runtime before you set it.'),
    form, result, planned);
}

// ------------------------------------------------------------------ start

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', () => {
    session.end();
    location.hash = '#/';
    showLogin('Logged out.');
  });
  document.getElementById('namespace').addEventListener('change', (event) => {
    const namespace = event.target.value.trim();
    if (namespace) location.hash = `#/namespaces/${segment(namespace)}/workloads`;
  });
  window.addEventListener('hashchange', route);
  if (session.token()) greet().catch(() => {});
  route();
});
