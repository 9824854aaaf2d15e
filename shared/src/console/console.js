// agentrun web console: vanilla JS, no build step, same-origin API calls only.
// All API text goes into the DOM through textContent (see el()), never innerHTML.
'use strict';

const KEY_NAME = 'agentrun_key';
const SVG_NS = 'http://www.w3.org/2000/svg';
const RUN_STATUSES = ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const ACTIVE = new Set(['queued', 'running', 'waiting']);
const TERMINAL_EVENTS = ['run.succeeded', 'run.failed', 'run.cancelled', 'run.timed_out'];
const EVENT_TYPES = [
  'run.queued', 'run.started', 'step.started', 'llm.completed', 'llm.circuit_open', 'tool.started',
  'tool.completed', 'handoff', 'output.invalid', 'step.completed', 'approval.requested',
  'approval.answered', 'run.resumed', 'context.summarized', ...TERMINAL_EVENTS,
];

const state = { key: null, admin: false, cleanups: [], notice: null };

// ---------- helpers ----------

// el('div', {class: 'x', id: 'y', on: {click: fn}}, 'text', child, ...)
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}
function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === 'text') node.textContent = String(v);
    else if (k in node && typeof v !== 'string' && !(node instanceof SVGElement)) node[k] = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
}
function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}
// Replaces a node's children (arrays flattened, null and false left out).
function fill(node, ...children) { node.replaceChildren(); append(node, children); return node; }
// For a view whose requests can overlap: each ask() returns a check that
// holds until the next ask(), so an answer overtaken by a newer request is dropped.
function newestWins() {
  let asked = 0;
  return () => { const mine = ++asked; return () => mine === asked; };
}
function main() { return document.getElementById('main'); }

function alertBox() { return el('div', { role: 'alert', class: 'alert', hidden: true }); }
function showError(box, err) {
  box.hidden = false;
  box.textContent = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err && err.message || err);
}
function hideError(box) { box.hidden = true; box.textContent = ''; }

function pretty(value) {
  if (typeof value === 'string') return value;
  try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
}
function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}
// The API counts money in micros (1,000,000 to one unit of the billing
// currency); the console shows units.
function fmtMoney(micros) {
  return (Number(micros || 0) / 1e6).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 });
}
function fmtNum(n) { return Number(n || 0).toLocaleString('en-US'); }
function isoDay(d) { return d.toISOString().slice(0, 10); }
// A date input's value (YYYY-MM-DD) as the start of that day here, in UTC.
function localMidnight(day) { return day ? new Date(`${day}T00:00:00`).toISOString() : ''; }
function duration(a, b) {
  const ms = new Date(b) - new Date(a);
  return isNaN(ms) ? '' : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
function statusBadge(status, id) {
  return el('span', { class: `badge status-${status}`, id, text: status });
}
function tableWrap(table) { return el('div', { class: 'table-wrap' }, table); }
function table(id, caption, headers, rows) {
  return tableWrap(el('table', { id },
    caption ? el('caption', { text: caption }) : null,
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, rows)));
}
function field(labelText, control) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return el('div', { class: 'field' }, el('label', { for: id, text: labelText }), control);
}
function onCleanup(fn) { state.cleanups.push(fn); }
function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}
const enc = encodeURIComponent;

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status; this.code = code; this.details = details;
  }
}

async function api(method, path, body, key = state.key) {
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network_error', 'The server could not be reached.');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) {
    const err = data && data.error;
    // The key this tab signed in with no longer works (revoked, expired):
    // back to the sign-in form. (A team key asking /v1/admin is only a probe.)
    if (res.status === 401 && key === state.key && !path.startsWith('/v1/admin')) {
      signOut('The key was refused (revoked or expired): sign in again.');
    }
    throw new ApiError(res.status, err ? err.code : `http_${res.status}`,
      err ? err.message : (text || res.statusText), err && err.details);
  }
  return data;
}

// Every page of a list endpoint (bounded).
async function allPages(path, maxPages = 20) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', cursor ? `${path}${sep}cursor=${enc(cursor)}` : path);
    out.push(...(page.data || []));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

// ---------- sign in / out ----------

async function checkAdmin(key) {
  try { await api('GET', '/v1/admin/teams', undefined, key); return true; } catch (e) { return false; }
}

function renderSignIn() {
  const box = alertBox();
  const input = el('input', { id: 'api-key', type: 'password', name: 'api-key', autocomplete: 'off', required: true, spellcheck: 'false' });
  const form = el('form', { id: 'signin', class: 'card narrow' },
    el('h1', { text: 'Sign in' }),
    el('p', { class: 'muted', text: 'Use a team API key, or the operator\'s admin key. It is kept in this tab only.' }),
    field('API key', input),
    box,
    el('button', { type: 'submit', text: 'Sign in' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    hideError(box);
    const key = input.value.trim();
    if (!key) return;
    const admin = await checkAdmin(key);
    if (!admin) {
      try { await api('GET', '/v1/agents?limit=1', undefined, key); } catch (e) {
        if (e.status === 401 || e.status === 403 || e.status === 0) { showError(box, e); return; }
      }
    }
    sessionStorage.setItem(KEY_NAME, key);
    state.key = key; state.admin = admin;
    const keep = location.hash && location.hash !== '#/';
    const target = admin ? '#/operators' : (keep ? location.hash : '#/runs');
    if (location.hash !== target) location.hash = target; // hashchange routes
    else route();
  });
  fill(main(), form);
  if (state.notice) { showError(box, state.notice); state.notice = null; }
  input.focus();
}

function signOut(notice) {
  state.notice = typeof notice === 'string' ? notice : null;
  sessionStorage.removeItem(KEY_NAME);
  state.key = null; state.admin = false;
  runCleanups();
  history.replaceState(null, '', '#/runs');
  route();
}

function updateChrome() {
  const signedIn = !!state.key;
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('sign-out').hidden = !signedIn;
  // The admin key reaches only the operators' view; a team key everything else.
  for (const a of document.querySelectorAll('#nav a')) a.parentElement.hidden = state.admin !== (a.dataset.route === 'operators');
  document.getElementById('key-kind').textContent = signedIn ? (state.admin ? 'admin key' : 'team key') : '';
  const current = (location.hash.split('/')[1] || 'runs');
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.route === current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function adminNote() {
  return el('p', { class: 'note', role: 'note',
    text: 'Signed in with the operator\'s admin key: team pages (runs, start, usage, agents) do not work with it. Sign in with a team API key for those.' });
}

// ---------- router ----------

function runCleanups() {
  for (const fn of state.cleanups.splice(0)) { try { fn(); } catch (e) { /* ignore */ } }
}

function route() {
  runCleanups();
  updateChrome();
  if (!state.key) { renderSignIn(); return; }
  let parts;
  try { parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent); } catch (e) { parts = ['?']; }
  const view = parts[0] || (state.admin ? 'operators' : 'runs');
  const root = fill(main());
  if (view === 'operators') {
    if (!state.admin) { root.append(el('p', { role: 'alert', class: 'alert', text: 'The Operators view needs the admin key.' })); return; }
    renderOperators(root); return;
  }
  if (state.admin && ['runs', 'start', 'usage', 'agents'].includes(view)) { root.append(adminNote()); return; }
  if (view === 'runs' && parts[1]) renderRun(root, parts[1]);
  else if (view === 'runs') renderRuns(root);
  else if (view === 'start') renderStart(root);
  else if (view === 'usage') renderUsage(root);
  else if (view === 'agents') renderAgents(root);
  else root.append(el('p', { role: 'alert', class: 'alert', text: 'No such page.' }));
}

// ---------- runs list ----------

const runsFilter = { status: '', agent: '', created_after: '', limit: '25', cursors: [] };

function renderRuns(root) {
  const box = alertBox();
  const status = el('select', { id: 'filter-status' }, el('option', { value: '', text: 'any' }),
    RUN_STATUSES.map((s) => el('option', { value: s, text: s })));
  status.value = runsFilter.status;
  const agent = el('input', { id: 'filter-agent', type: 'text', value: runsFilter.agent, placeholder: 'agent name' });
  const after = el('input', { id: 'filter-after', type: 'date', value: runsFilter.created_after });
  const limit = el('select', { id: 'filter-limit' }, ['10', '25', '50', '100'].map((n) => el('option', { value: n, text: n })));
  limit.value = runsFilter.limit;
  const form = el('form', { id: 'runs-filter', class: 'filters' },
    field('Status', status), field('Agent', agent), field('Created on or after', after), field('Per page', limit),
    el('button', { type: 'submit', text: 'Apply' }));
  const body = el('div', { id: 'runs-body' });
  const prev = el('button', { type: 'button', id: 'runs-first', text: 'First page' });
  const next = el('button', { type: 'button', id: 'runs-next', text: 'Next page' });
  root.append(el('h1', { text: 'Runs' }), form, box, body, el('div', { class: 'pager' }, prev, next));

  let timer = null;
  let alive = true;
  const ask = newestWins();
  onCleanup(() => { alive = false; clearTimeout(timer); });

  async function load() {
    clearTimeout(timer);
    const current = ask();
    body.setAttribute('aria-busy', 'true');
    const cursor = runsFilter.cursors[runsFilter.cursors.length - 1] || '';
    const created_after = localMidnight(runsFilter.created_after);
    try {
      const page = await api('GET', `/v1/runs${q({ status: runsFilter.status, agent: runsFilter.agent, created_after, limit: runsFilter.limit, cursor })}`);
      // A slower, older answer (a refresh overtaken by a new filter) is dropped.
      if (!alive || !current()) return;
      hideError(box);
      body.removeAttribute('aria-busy');
      const rows = page.data.map((r) => el('tr', {},
        el('td', {}, el('a', { href: `#/runs/${enc(r.id)}`, class: 'mono', text: r.id })),
        el('td', { text: `${r.agent} v${r.version}` }),
        el('td', {}, statusBadge(r.status)),
        el('td', { class: 'num', text: r.steps }),
        el('td', { class: 'num', text: fmtNum(r.usage && r.usage.total_tokens) }),
        el('td', { text: fmtTime(r.created_at) })));
      fill(body, rows.length
        ? table('runs-table', 'Runs, newest first', ['Run', 'Agent', 'Status', 'Steps', 'Tokens', 'Created'], rows)
        : el('p', { class: 'muted', text: 'No runs match.' }));
      next.disabled = !page.next_cursor;
      next.dataset.cursor = page.next_cursor || '';
      prev.disabled = runsFilter.cursors.length === 0;
      // Live status: the first page (where new runs appear) and any page
      // showing an open run refresh every 3 s; not while the tab is hidden.
      if (!cursor || page.data.some((r) => ACTIVE.has(r.status))) timer = setTimeout(refresh, 3000);
    } catch (e) {
      if (alive && current()) { body.removeAttribute('aria-busy'); showError(box, e); }
    }
  }
  function refresh() {
    if (document.hidden) timer = setTimeout(refresh, 3000);
    else load();
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(runsFilter, { status: status.value, agent: agent.value.trim(), created_after: after.value, limit: limit.value, cursors: [] });
    load();
  });
  next.addEventListener('click', () => { if (next.dataset.cursor) { runsFilter.cursors.push(next.dataset.cursor); load(); } });
  prev.addEventListener('click', () => { runsFilter.cursors = []; load(); });
  load();
}

// ---------- run page ----------

function renderRun(root, runId) {
  const box = alertBox();
  const header = el('div', { class: 'run-header' });
  const cancel = el('button', { type: 'button', id: 'cancel-run', class: 'danger', hidden: true, text: 'Cancel run' });
  const approvals = el('section', { id: 'approvals', 'aria-label': 'Approvals', hidden: true });
  const timeline = el('div', { id: 'timeline' });
  const streamState = el('span', { id: 'stream-state', class: 'muted', 'aria-live': 'polite' });
  const steps = el('div', { id: 'run-steps' });
  const output = el('div', { id: 'run-output' });
  root.append(el('section', { id: 'run' },
    el('p', {}, el('a', { href: '#/runs', text: '← Runs' })),
    el('h1', {}, 'Run ', el('span', { class: 'mono', text: runId })),
    header, el('div', { class: 'actions' }, cancel), box, approvals,
    el('h2', {}, 'Timeline ', streamState), timeline,
    el('h2', { text: 'Steps' }), steps,
    el('h2', { text: 'Output' }), output));

  let alive = true;
  let es = null;
  let lastSeq = 0;
  let finished = false;
  let retry = 0;
  let retryTimer = null;
  let run = null;
  const invalid = [];
  const groups = new Map();
  let lastGroup = null;
  onCleanup(() => { alive = false; clearTimeout(retryTimer); if (es) es.close(); });

  const askRun = newestWins();
  async function loadRun() {
    const current = askRun();
    try {
      const fresh = await api('GET', `/v1/runs/${enc(runId)}`);
      // An older answer landing last must not put a finished run back to running.
      if (!alive || !current()) return;
      run = fresh;
      hideError(box);
      drawHeader(); drawOutput();
      cancel.hidden = !ACTIVE.has(run.status);
      if (run.status === 'waiting') loadApprovals(); else { approvals.hidden = true; fill(approvals); }
    } catch (e) { if (alive) showError(box, e); }
  }

  function drawHeader() {
    const u = run.usage || {};
    const rows = [
      ['Status', statusBadge(run.status, 'run-status')],
      ['Stop reason', el('span', { id: 'run-stop-reason', text: run.stop_reason || '—' })],
      ['Stop detail', el('span', { id: 'run-stop-detail', text: run.stop_detail || '—' })],
      ['Agent', `${run.agent} v${run.version}` + (run.active_agent !== run.agent ? ` (now ${run.active_agent} v${run.active_version})` : '')],
      ['Steps', String(run.steps)],
      ['Tokens', `${fmtNum(u.input_tokens)} in + ${fmtNum(u.output_tokens)} out`],
      ['Cost', run.cost ? fmtMoney(run.cost.total_micros) : '—'],
      ['Thread', el('span', { class: 'mono', text: run.thread_id })],
      ['Created', fmtTime(run.created_at)],
      ['Finished', run.finished_at ? fmtTime(run.finished_at) : '—'],
    ];
    if (run.waiting_for) rows.splice(1, 0, ['Waiting for', run.waiting_for]);
    fill(header, el('dl', { class: 'facts' }, rows.map(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)])));
  }

  function drawOutput() {
    fill(output);
    const badInvalid = run.stop_reason === 'output_invalid' || invalid.length > 0;
    if (run.status === 'succeeded') {
      output.append(el('p', {}, el('span', { class: 'badge valid', id: 'output-validity', text: 'valid' }),
        invalid.length ? ` after ${invalid.length} invalid answer(s) repaired` : ''));
      if (run.output_inline) output.append(el('pre', { class: 'json', text: pretty(run.output) }));
      else output.append(loadAll(`Load output (${fmtNum(run.output_bytes)} bytes)`, `/v1/runs/${enc(runId)}/output`));
    } else if (badInvalid) {
      output.append(el('p', {}, el('span', { class: 'badge invalid', id: 'output-validity', text: 'invalid' }), ' The final answer failed the output schema.'));
      for (const errs of invalid) output.append(el('ul', { class: 'errors' }, errs.map((x) => el('li', { text: x }))));
      if (run.raw_output) output.append(el('h3', { text: 'Raw answer' }), el('pre', { text: run.raw_output }));
      else if (run.raw_output_bytes) {
        output.append(el('h3', { text: 'Raw answer' }),
          loadAll(`Load the raw answer (${fmtNum(run.raw_output_bytes)} bytes)`, `/v1/runs/${enc(runId)}/output?part=raw_output`));
      }
    } else {
      output.append(el('p', { class: 'muted', text: ACTIVE.has(run.status) ? 'No output yet.' : 'No output.' }));
    }
  }

  // A button that reads a text too large to come inline, part by part, into a <pre>.
  function loadAll(label, path) {
    const pre = el('pre', { class: 'json', hidden: true });
    const button = el('button', { type: 'button', text: label });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try { pre.textContent = await readParts(path); pre.hidden = false; button.remove(); } catch (e) { showError(box, e); button.disabled = false; }
    });
    return el('div', { class: 'load-all' }, button, pre);
  }

  async function readParts(path) {
    let text = '';
    let offset = 0;
    for (let i = 0; i < 64; i++) {
      const part = await api('GET', `${path}${path.includes('?') ? '&' : '?'}offset=${offset}`);
      text += part.text;
      if (part.next_offset === null || part.next_offset === undefined) break;
      offset = part.next_offset;
    }
    try { return pretty(JSON.parse(text)); } catch (e) { return text; }
  }

  async function loadSteps() {
    try {
      const list = await allPages(`/v1/runs/${enc(runId)}/steps`);
      if (!alive) return;
      fill(steps, list.length ? list.map(drawStep) : el('p', { class: 'muted', text: 'No committed steps yet.' }));
    } catch (e) { if (alive) showError(box, e); }
  }

  function drawStep(s) {
    const outcome = s.outcome && typeof s.outcome.next === 'string' ? `next: ${s.outcome.next}` : '';
    const det = el('details', { class: 'step', open: s.tool_calls.length > 0 },
      el('summary', {}, `Step ${s.step_no} · ${s.agent} v${s.agent_version} · ${s.model} · ${fmtNum(s.input_tokens)}+${fmtNum(s.output_tokens)} tokens · ${duration(s.started_at, s.finished_at)}`,
        outcome ? ` · ${outcome}` : '', s.attempt > 1 ? ` · attempt ${s.attempt}` : ''));
    for (const c of s.tool_calls) {
      det.append(el('div', { class: `tool-call${c.is_error ? ' error' : ''}` },
        el('h4', {}, c.name, c.is_error ? el('span', { class: 'badge invalid', text: 'error' }) : null),
        el('p', { class: 'muted', text: `call ${c.call_index} · ${c.attempts} attempt(s) · ${duration(c.started_at, c.finished_at)} · ${fmtTime(c.started_at)}` }),
        el('h5', { text: 'Arguments' }), el('pre', { class: 'json', text: pretty(c.arguments) }),
        el('h5', { text: 'Result' }), el('pre', { text: prettyMaybe(c.result) }),
        c.result_cut ? loadAll(`Load the whole result (${fmtNum(c.result_bytes)} bytes)`,
          `/v1/runs/${enc(runId)}/steps/${s.step_no}/tool_calls/${c.call_index}/result`) : null));
    }
    det.append(el('details', { class: 'outcome' }, el('summary', { text: 'Outcome' }), el('pre', { class: 'json', text: pretty(s.outcome) })));
    return det;
  }

  async function loadApprovals() {
    try {
      const list = await api('GET', `/v1/runs/${enc(runId)}/approvals`);
      if (!alive) return;
      const pending = (list.data || []).filter((a) => a.status === 'pending');
      approvals.hidden = false;
      // The same open requests keep their cards (and any comment being typed).
      const shown = [...approvals.querySelectorAll('article.approval')].map((c) => c.dataset.requestId);
      if (pending.length && shown.join() === pending.map((a) => a.request_id).join()) return;
      fill(approvals, el('h2', { text: 'Waiting for approval' }),
        pending.length ? pending.map(approvalCard) : el('p', { class: 'muted', text: 'No pending requests.' }));
    } catch (e) { if (alive) showError(box, e); }
  }

  function approvalCard(a) {
    const err = alertBox();
    const comment = el('textarea', { rows: 2, maxlength: 1000, class: 'comment' });
    const approve = el('button', { type: 'button', class: 'approve', text: 'Approve' });
    const reject = el('button', { type: 'button', class: 'reject danger', text: 'Reject' });
    const card = el('article', { class: 'approval card', 'data-request-id': a.request_id },
      el('h3', {}, `${a.kind === 'handoff' ? 'Handoff to' : 'Tool'} `, el('code', { text: a.name })),
      el('p', { class: 'muted', text: `${a.kind} · step ${a.step_no} · call ${a.call_index} · expires ${fmtTime(a.expires_at)}` }),
      el('pre', { class: 'json', text: pretty(a.arguments) }),
      field('Comment (optional)', comment), err, el('div', { class: 'actions' }, approve, reject));
    const answer = async (yes) => {
      hideError(err);
      approve.disabled = reject.disabled = true;
      const body = { approve: yes };
      if (comment.value.trim()) body.comment = comment.value.trim();
      try {
        await api('POST', `/v1/runs/${enc(runId)}/approvals/${enc(a.request_id)}`, body);
        card.replaceChildren(el('p', { role: 'status', text: `${a.name}: ${yes ? 'approved' : 'rejected'}.` }));
        loadRun();
      } catch (e) {
        showError(err, e);
        approve.disabled = reject.disabled = false;
      }
    };
    approve.addEventListener('click', () => answer(true));
    reject.addEventListener('click', () => answer(false));
    return card;
  }

  // --- timeline ---
  function groupFor(stepNo) {
    const key = stepNo === null || stepNo === undefined ? (lastGroup ? null : 'run') : `step-${stepNo}`;
    if (key === null) return lastGroup;
    let g = groups.get(key);
    if (!g) {
      const list = el('ol', { class: 'events' });
      const live = el('pre', { class: 'live-text', hidden: true, 'aria-label': key === 'run' ? 'Model text' : `Model text, step ${stepNo}` });
      const sec = el('section', { class: 'step-group', 'data-step': stepNo ?? '' },
        el('h3', { text: key === 'run' ? 'Run' : `Step ${stepNo}` }), list, live);
      timeline.append(sec);
      g = { list, live };
      groups.set(key, g);
    }
    lastGroup = g;
    return g;
  }

  function describe(type, d) {
    d = d || {};
    switch (type) {
      case 'step.started': return `agent ${d.agent ?? ''}${d.attempt ? ` · attempt ${d.attempt}` : ''}`;
      case 'llm.completed': return `${d.agent ?? ''} · ${d.model ?? ''} · ${fmtNum(d.input_tokens)}+${fmtNum(d.output_tokens)} tokens` +
        (d.tool_calls && d.tool_calls.length ? ` · tools: ${d.tool_calls.join(', ')}` : '');
      case 'tool.started': return `${d.tool ?? ''} · attempt ${d.attempt ?? 1}`;
      case 'tool.completed': return `${d.tool ?? ''} · ${d.is_error ? 'error' : 'ok'} · ${d.duration_ms ?? '?'} ms`;
      case 'handoff': return `${d.from ?? ''} → ${d.to ?? ''}${d.version ? ` v${d.version}` : ''}`;
      case 'output.invalid': return (d.errors || []).join('; ');
      case 'step.completed': return `${fmtNum(d.input_tokens)}+${fmtNum(d.output_tokens)} tokens · next: ${d.next ?? ''}`;
      case 'approval.requested': return `${d.kind ?? ''} ${d.name ?? ''} ${d.arguments ? JSON.stringify(d.arguments) : ''}`;
      case 'approval.answered': return `${d.name ?? ''} · ${d.approved ? 'approved' : 'rejected'}${d.comment ? ` · “${d.comment}”` : ''}`;
      case 'run.succeeded': case 'run.failed': case 'run.cancelled': case 'run.timed_out':
        return [d.stop_reason, d.detail, d.usage ? `${fmtNum(d.usage.total_tokens)} tokens in all` : null].filter(Boolean).join(' · ');
      case 'context.summarized': return Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
      default: return Object.keys(d).length ? Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ') : '';
    }
  }

  function onEvent(msg) {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    const type = ev.type || msg.type;
    const seq = Number(ev.seq || msg.lastEventId || 0);
    if (seq && seq <= lastSeq) return;
    if (seq) lastSeq = seq;
    retry = 0;
    const g = groupFor(ev.step_no);
    const failed = ev.data && ev.data.is_error ? ' ev-error' : '';
    g.list.append(el('li', { 'data-type': type, 'data-seq': seq || '', class: `ev ev-${type.replace(/\./g, '-')}${failed}` },
      el('span', { class: 'seq', text: seq ? `#${seq}` : '' }),
      el('span', { class: 'type', text: type }),
      el('span', { class: 'detail', text: describe(type, ev.data) }),
      el('time', { datetime: ev.created_at || '', text: ev.created_at ? new Date(ev.created_at).toLocaleTimeString() : '' })));
    if (type === 'output.invalid') { invalid.push((ev.data && ev.data.errors) || []); if (run) drawOutput(); }
    if (TERMINAL_EVENTS.includes(type)) {
      finished = true;
      if (es) { es.close(); es = null; }
      streamState.textContent = '(ended)';
      loadRun(); loadSteps();
    } else if (['approval.requested', 'approval.answered', 'run.resumed', 'run.started'].includes(type)) {
      debounce('run', loadRun);
    } else if (type === 'step.completed') {
      debounce('steps', loadSteps);
      debounce('run', loadRun);
    }
  }

  function onDelta(msg) {
    let d;
    try { d = JSON.parse(msg.data); } catch (e) { return; }
    const g = groupFor(d.step_no);
    g.live.hidden = false;
    // offset 0 starts the text again (a retried call); text missed while the
    // stream reconnected (deltas are not replayed) shows as a gap.
    const have = g.live.dataset.upTo ? Number(g.live.dataset.upTo) : 0;
    const offset = Number(d.offset || 0);
    if (offset === 0) g.live.textContent = '';
    else if (offset > have) g.live.textContent += ' … ';
    else if (offset < have) return;
    g.live.textContent += d.text || '';
    g.live.dataset.upTo = String(offset + [...(d.text || '')].length); // offsets count code points
  }

  const timers = {};
  function debounce(name, fn) {
    clearTimeout(timers[name]);
    timers[name] = setTimeout(() => { if (alive) fn(); }, 300);
  }
  onCleanup(() => Object.values(timers).forEach(clearTimeout));

  async function connect() {
    if (!alive || finished) return;
    streamState.textContent = '(connecting)';
    try {
      const tok = await api('POST', `/v1/runs/${enc(runId)}/stream-token`);
      if (!alive || finished) return;
      let url = tok.events_url;
      if (lastSeq > 0) url += `${url.includes('?') ? '&' : '?'}after=${lastSeq}`;
      const source = new EventSource(url);
      es = source;
      for (const t of EVENT_TYPES) source.addEventListener(t, onEvent);
      source.addEventListener('llm.delta', onDelta);
      source.addEventListener('open', () => { streamState.textContent = '(live)'; retry = 0; });
      source.addEventListener('error', () => {
        source.close();
        if (es === source) es = null;
        if (!alive || finished) return;
        streamState.textContent = '(reconnecting)';
        // A stream the server ended is resumed at once; failures back off.
        retry = Math.min(retry + 1, 6);
        retryTimer = setTimeout(connect, retry === 1 ? 0 : 500 * 2 ** (retry - 2));
      });
    } catch (e) {
      if (!alive) return;
      showError(box, e);
      if (e.status === 404 || e.status === 401) { streamState.textContent = ''; return; }
      retry = Math.min(retry + 1, 6);
      retryTimer = setTimeout(connect, 500 * 2 ** (retry - 1));
    }
  }

  cancel.addEventListener('click', async () => {
    if (!confirm('Cancel this run?')) return;
    cancel.disabled = true;
    try { await api('POST', `/v1/runs/${enc(runId)}/cancel`, {}); await loadRun(); } catch (e) { showError(box, e); }
    cancel.disabled = false;
  });

  loadRun().then(() => { if (alive && run) { loadSteps(); connect(); } });
}

function prettyMaybe(text) {
  if (typeof text !== 'string') return pretty(text);
  try { return pretty(JSON.parse(text)); } catch (e) { return text; }
}

// ---------- start a run ----------

function renderStart(root) {
  const box = alertBox();
  const agent = el('select', { id: 'start-agent', required: true }, el('option', { value: '', text: 'Loading…' }));
  const input = el('textarea', { id: 'start-input', rows: 8, required: true, placeholder: 'Text, or JSON such as {"question": "..."}' });
  const thread = el('input', { id: 'start-thread', type: 'text', placeholder: 'optional', class: 'mono' });
  const submit = el('button', { type: 'submit', text: 'Start run' });
  const form = el('form', { id: 'start-form', class: 'card' },
    field('Agent', agent), field('Input (JSON if it parses, else text)', input), field('Thread id', thread), box, submit);
  root.append(el('h1', { text: 'Start a run' }), form);
  allPages('/v1/agents').then((list) => {
    fill(agent, list.length ? list.map((a) => el('option', { value: a.name, text: `${a.name} (v${a.version})` }))
      : el('option', { value: '', text: 'No agents' }));
  }).catch((e) => showError(box, e));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    hideError(box);
    const raw = input.value;
    if (!agent.value) { showError(box, 'Choose an agent.'); return; }
    if (!raw.trim()) { showError(box, 'Give the run an input.'); return; }
    let value = raw;
    try { const parsed = JSON.parse(raw); if (parsed !== null) value = parsed; } catch (e) { /* text */ }
    const body = { agent: agent.value, input: value };
    if (thread.value.trim()) body.thread_id = thread.value.trim();
    submit.disabled = true;
    try {
      const run = await api('POST', '/v1/runs', body);
      location.hash = `#/runs/${enc(run.id)}`;
    } catch (e) { showError(box, e); submit.disabled = false; }
  });
  agent.focus();
}

// ---------- usage ----------

function renderUsage(root) {
  const box = alertBox();
  const chartBox = el('div', { class: 'chart-box' });
  const budget = el('div', { id: 'budget' });
  const totals = el('div', { id: 'usage-totals' });
  const month = el('input', { id: 'statement-month', type: 'month', value: new Date().toISOString().slice(0, 7) });
  const download = el('a', { id: 'download-csv', class: 'button', href: '#', text: 'Download CSV' });
  const stmt = el('div', { id: 'statement' });
  const more = el('button', { type: 'button', id: 'statement-next', text: 'Next page', hidden: true });
  root.append(el('h1', { text: 'Usage' }), box,
    el('h2', { text: 'Cost per day, last 30 days' }),
    el('p', { class: 'muted', text: 'Amounts are in units of the billing currency.' }), chartBox, totals,
    el('h2', { text: 'Today\'s token budget' }), budget,
    el('h2', { text: 'Monthly statement' }),
    el('div', { class: 'filters' }, field('Month', month), download), stmt, more);
  let alive = true;
  onCleanup(() => { alive = false; });

  const today = new Date();
  const from = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - 29));
  const to = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
  api('GET', `/v1/usage${q({ from: isoDay(from), to: isoDay(to) })}`).then((u) => {
    if (!alive) return;
    const byDay = new Map((u.data || []).map((d) => [d.day, d]));
    const days = [];
    for (let d = new Date(from); d <= to; d.setUTCDate(d.getUTCDate() + 1)) {
      const day = isoDay(d);
      days.push(byDay.get(day) || { day, cost_micros: 0, runs: 0, total_tokens: 0 });
    }
    chartBox.append(drawChart(days));
    const t = u.totals || {};
    totals.append(el('p', { text: `${fmtNum(t.runs)} runs · ${fmtNum(t.total_tokens)} tokens · ${fmtNum(t.llm_calls)} model calls · ${fmtMoney(t.cost_micros)} (fees ${fmtMoney(t.fee_micros)}, tokens ${fmtMoney(t.token_cost_micros)})` }));
    const tt = u.tokens_today || {};
    const held = Number(tt.used || 0) + Number(tt.reserved || 0);
    if (tt.daily_budget) {
      const bar = el('progress', { id: 'budget-bar', max: tt.daily_budget, value: Math.min(held, tt.daily_budget) });
      budget.append(field(`${tt.day}: ${fmtNum(tt.used)} used + ${fmtNum(tt.reserved)} reserved of ${fmtNum(tt.daily_budget)} tokens (${(100 * held / tt.daily_budget).toFixed(1)}%)`, bar));
    } else budget.append(el('p', { text: `${tt.day}: ${fmtNum(tt.used)} used + ${fmtNum(tt.reserved)} reserved tokens; no daily budget shown.` }));
  }).catch((e) => { if (alive) showError(box, e); });

  let cursor = null;
  const askStatement = newestWins();
  async function loadStatement(reset) {
    if (reset) { cursor = null; fill(stmt); }
    const current = askStatement();
    try {
      const s = await api('GET', `/v1/usage/runs${q({ month: month.value, cursor })}`);
      // Another month asked for meanwhile: this answer is stale.
      if (!alive || !current()) return;
      hideError(box);
      let tbody = stmt.querySelector('tbody');
      if (!tbody) {
        const t = s.totals || {};
        stmt.append(el('p', { text: `${s.month}: ${fmtNum(t.runs)} runs · ${fmtNum(t.total_tokens)} tokens · ${fmtMoney(t.cost_micros)}` }),
          table('statement-table', `Statement ${s.month}`, ['Run', 'Created', 'Agent', 'Status', 'Tokens in', 'Tokens out', 'Calls', 'Cost'], []));
        tbody = stmt.querySelector('tbody');
      }
      tbody.append(...s.data.map((r) => el('tr', {},
        el('td', {}, el('a', { href: `#/runs/${enc(r.run_id)}`, class: 'mono', text: r.run_id })),
        el('td', { text: fmtTime(r.created_at) }), el('td', { text: `${r.agent} v${r.version}` }),
        el('td', {}, statusBadge(r.status)), el('td', { class: 'num', text: fmtNum(r.input_tokens) }),
        el('td', { class: 'num', text: fmtNum(r.output_tokens) }), el('td', { class: 'num', text: fmtNum(r.llm_calls) }),
        el('td', { class: 'num', text: fmtMoney(r.cost_micros) }))));
      cursor = s.next_cursor || null;
      more.hidden = !cursor;
    } catch (e) { if (alive) showError(box, e); }
  }
  month.addEventListener('change', () => loadStatement(true));
  more.addEventListener('click', () => loadStatement(false));
  download.addEventListener('click', async (ev) => {
    ev.preventDefault();
    try {
      let url = `/v1/usage/runs${q({ month: month.value, format: 'csv', limit: 10000 })}`;
      let csv = '';
      for (let i = 0; url && i < 100; i++) {
        const res = await fetch(url, { headers: { Authorization: `Bearer ${state.key}`, Accept: 'text/csv' } });
        const text = await res.text();
        if (!res.ok) {
          let err = null;
          try { err = JSON.parse(text).error; } catch (e) { /* not JSON */ }
          throw err ? new ApiError(res.status, err.code, err.message) : new Error(`HTTP ${res.status}`);
        }
        csv += i === 0 ? text : text.slice(text.indexOf('\n') + 1);
        const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('Link') || '');
        url = m ? new URL(m[1], location.href) : null;
        if (url && url.origin !== location.origin) url = null;
      }
      const blobUrl = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
      const a = el('a', { href: blobUrl, download: `agentrun-statement-${month.value}.csv`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(blobUrl), 10000);
    } catch (e) { showError(box, e); }
  });
  loadStatement(true);
}

function drawChart(days) {
  const W = 720;
  const H = 220;
  const pad = { l: 84, r: 8, t: 12, b: 28 };
  const max = Math.max(1, ...days.map((d) => Number(d.cost_micros || 0)));
  const total = days.reduce((s, d) => s + Number(d.cost_micros || 0), 0);
  const bw = (W - pad.l - pad.r) / days.length;
  const ih = H - pad.t - pad.b;
  const label = `Bar chart of cost per day from ${days[0].day} to ${days[days.length - 1].day}; total ${fmtMoney(total)}, highest day ${fmtMoney(max)}.`;
  const chart = svg('svg', { id: 'usage-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMidYMid meet' },
    svg('title', {}, label),
    svg('line', { x1: pad.l, y1: pad.t + ih, x2: W - pad.r, y2: pad.t + ih, class: 'axis' }),
    svg('text', { x: pad.l - 6, y: pad.t + 8, 'text-anchor': 'end', class: 'tick' }, fmtMoney(max)),
    svg('text', { x: pad.l - 6, y: pad.t + ih, 'text-anchor': 'end', class: 'tick' }, fmtMoney(0)),
    svg('text', { x: pad.l, y: H - 8, class: 'tick' }, days[0].day),
    svg('text', { x: W - pad.r, y: H - 8, 'text-anchor': 'end', class: 'tick' }, days[days.length - 1].day));
  days.forEach((d, i) => {
    const v = Number(d.cost_micros || 0);
    const h = Math.max(v > 0 ? 1 : 0, (v / max) * ih);
    chart.append(svg('rect', { class: 'bar', 'data-day': d.day, x: (pad.l + i * bw + bw * 0.1).toFixed(2), y: (pad.t + ih - h).toFixed(2),
      width: (bw * 0.8).toFixed(2), height: h.toFixed(2) },
    svg('title', {}, `${d.day}: ${fmtMoney(v)} · ${fmtNum(d.runs)} runs · ${fmtNum(d.total_tokens)} tokens`)));
  });
  return chart;
}

// ---------- agents ----------

function renderAgents(root) {
  const box = alertBox();
  const list = el('div', { id: 'agents-list' });
  const agentSel = el('select', { id: 'diff-agent' });
  const va = el('select', { id: 'diff-a' });
  const vb = el('select', { id: 'diff-b' });
  const out = el('div', { id: 'agent-diff' });
  const form = el('form', { id: 'diff-form', class: 'filters' },
    field('Agent', agentSel), field('Old version', va), field('New version', vb), el('button', { type: 'submit', text: 'Compare' }));
  root.append(el('h1', { text: 'Agents' }), box, list, el('h2', { text: 'Compare versions' }), form, out);
  let agents = [];
  let alive = true;
  onCleanup(() => { alive = false; });

  function fillVersions() {
    const a = agents.find((x) => x.name === agentSel.value);
    const n = a ? a.version : 0;
    const opts = () => Array.from({ length: n }, (_, i) => el('option', { value: i + 1, text: `v${i + 1}` }));
    fill(va, ...opts());
    fill(vb, ...opts());
    va.value = String(Math.max(1, n - 1));
    vb.value = String(n);
  }

  allPages('/v1/agents').then((l) => {
    if (!alive) return;
    agents = l;
    fill(list, l.length ? table('agents-table', 'Agents (latest versions)', ['Name', 'Latest', 'Model', 'Tools', 'Created'],
      l.map((a) => el('tr', {}, el('td', { text: a.name }), el('td', { class: 'num', text: `v${a.version}` }),
        el('td', { text: a.spec && a.spec.model ? a.spec.model : '' }),
        el('td', { text: ((a.spec && a.spec.tools) || []).map((t) => t.name).join(', ') }),
        el('td', { text: fmtTime(a.created_at) })))) : el('p', { class: 'muted', text: 'No agents yet.' }));
    agentSel.append(...l.map((a) => el('option', { value: a.name, text: a.name })));
    fillVersions();
  }).catch((e) => showError(box, e));

  agentSel.addEventListener('change', fillVersions);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    hideError(box);
    if (!agentSel.value) return;
    try {
      const base = `/v1/agents/${enc(agentSel.value)}/versions/`;
      const [a, b] = await Promise.all([api('GET', base + va.value), api('GET', base + vb.value)]);
      const lines = diffLines(pretty(a.spec).split('\n'), pretty(b.spec).split('\n'));
      const changed = lines.filter((l) => l.op !== ' ').length;
      fill(out, el('p', { class: 'muted', text: changed ? `${changed} changed line(s), v${a.version} → v${b.version}` : 'The specs are the same.' }),
        el('pre', { class: 'diff', 'aria-label': `Diff of v${a.version} and v${b.version}` },
          lines.map((l) => el('span', { class: l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same', text: `${l.op} ${l.text}\n` }))));
    } catch (e) { showError(box, e); }
  });
}

// LCS line diff: [{op: ' ' | '-' | '+', text}]
function diffLines(a, b) {
  const n = a.length;
  const m = b.length;
  const L = new Uint32Array((n + 1) * (m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i * (m + 1) + j] = a[i] === b[j] ? L[(i + 1) * (m + 1) + j + 1] + 1
        : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: ' ', text: a[i] }); i++; j++; }
    else if (L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1]) out.push({ op: '-', text: a[i++] });
    else out.push({ op: '+', text: b[j++] });
  }
  while (i < n) out.push({ op: '-', text: a[i++] });
  while (j < m) out.push({ op: '+', text: b[j++] });
  return out;
}

// ---------- operators ----------

function renderOperators(root) {
  const box = alertBox();
  const issued = el('div', { id: 'issued-key' });
  const teams = el('div', { id: 'teams' });
  root.append(el('h1', { text: 'Operators' }), box, issued, teams);
  let alive = true;
  onCleanup(() => { alive = false; });

  allPages('/v1/admin/teams').then((list) => {
    if (!alive) return;
    fill(teams, list.length ? list.map((t) => teamCard(t)) : el('p', { class: 'muted', text: 'No teams.' }));
  }).catch((e) => showError(box, e));

  function usageBar(text, value, max) {
    return field(text, el('progress', { max: Math.max(1, max), value: Math.min(value, Math.max(1, max)) }));
  }

  function teamCard(t) {
    const card = el('article', { class: 'team card', 'data-team-id': t.id });
    const err = alertBox();
    const l = t.limits || {};
    const tt = t.tokens_today || {};
    const held = Number(tt.used || 0) + Number(tt.reserved || 0);
    const budgetMax = tt.daily_budget || l.daily_token_budget || 0;
    const patch = async (body) => {
      hideError(err);
      try { const updated = await api('PATCH', `/v1/admin/teams/${enc(t.id)}`, body); card.replaceWith(teamCard(updated)); } catch (e) { showError(err, e); }
    };

    const reason = el('input', { type: 'text', maxlength: 1000, placeholder: 'why (shown to the team)' });
    const teamSwitch = el('button', { type: 'button', class: t.disabled_reason ? '' : 'danger', text: t.disabled_reason ? 'Enable team' : 'Disable team' });
    teamSwitch.addEventListener('click', () => {
      if (t.disabled_reason) patch({ disabled: false });
      else if (confirm(`Disable team ${t.name}? Its runs will be refused.`)) patch({ disabled: true, reason: reason.value.trim() || null });
    });
    const agentName = el('input', { type: 'text', placeholder: 'agent name', pattern: '[a-z][a-z0-9_-]{0,63}' });
    const agentReason = el('input', { type: 'text', maxlength: 1000, placeholder: 'why' });
    const agentOff = el('button', { type: 'button', class: 'danger', text: 'Disable agent' });
    agentOff.addEventListener('click', () => {
      const name = agentName.value.trim();
      if (!name) { showError(err, 'Name the agent to disable.'); return; }
      patch({ agents: { [name]: { disabled: true, reason: agentReason.value.trim() || null } } });
    });
    const disabledAgents = Object.entries(t.disabled_agents || {});

    const keysBox = el('div', { class: 'keys' });
    const keys = el('details', { class: 'keys-details' }, el('summary', { text: 'API keys' }), keysBox);
    keys.addEventListener('toggle', () => { if (keys.open) loadKeys(); });
    async function loadKeys() {
      try {
        const list = await allPages(`/v1/admin/teams/${enc(t.id)}/keys`);
        const issue = el('button', { type: 'button', text: 'Issue key' });
        const expires = el('input', { type: 'date' });
        issue.addEventListener('click', async () => {
          hideError(err);
          try {
            // The key works through the chosen day, here.
            const body = expires.value ? { expires_at: new Date(`${expires.value}T23:59:59`).toISOString() } : {};
            const k = await api('POST', `/v1/admin/teams/${enc(t.id)}/keys`, body);
            showIssued(k, t);
            loadKeys();
          } catch (e) { showError(err, e); }
        });
        fill(keysBox, 
          list.length ? table(null, `Keys of ${t.name}`, ['Prefix', 'Created', 'Expires', 'Revoked', ''], list.map((k) => {
            const revoke = el('button', { type: 'button', class: 'danger', text: 'Revoke', 'aria-label': `Revoke key ${k.prefix}`, disabled: !!k.revoked_at });
            revoke.addEventListener('click', async () => {
              if (!confirm(`Revoke key ${k.prefix}…? Requests with it will be refused.`)) return;
              try { await api('DELETE', `/v1/admin/keys/${enc(k.id)}`); loadKeys(); } catch (e) { showError(err, e); }
            });
            return el('tr', {}, el('td', { class: 'mono', text: `${k.prefix}…` }), el('td', { text: fmtTime(k.created_at) }),
              el('td', { text: k.expires_at ? fmtTime(k.expires_at) : 'never' }), el('td', { text: k.revoked_at ? fmtTime(k.revoked_at) : '—' }),
              el('td', {}, revoke));
          })) : el('p', { class: 'muted', text: 'No keys.' }),
          el('div', { class: 'filters' }, field('Expires (optional)', expires), issue));
      } catch (e) { showError(err, e); }
    }

    fill(card,
      el('h2', {}, t.name, ' ', t.disabled_reason ? el('span', { class: 'badge invalid', text: 'disabled' }) : null),
      el('p', { class: 'muted mono', text: `${t.id} · plan ${t.plan} · since ${fmtTime(t.created_at)}` }),
      t.disabled_reason ? el('p', { class: 'note', text: `Disabled: ${t.disabled_reason}` }) : null,
      el('dl', { class: 'facts' },
        el('dt', { text: 'Concurrent runs' }), el('dd', { text: fmtNum(l.max_concurrent_runs) }),
        el('dt', { text: 'Daily tokens' }), el('dd', { text: fmtNum(l.daily_token_budget) }),
        el('dt', { text: 'Runs per second' }), el('dd', { text: `${l.runs_per_second ?? ''} (burst ${l.run_burst ?? ''})` })),
      usageBar(`Slots: ${fmtNum(t.running_runs)} of ${fmtNum(l.max_concurrent_runs)} running`, Number(t.running_runs || 0), Number(l.max_concurrent_runs || 0)),
      usageBar(`Tokens ${tt.day || 'today'}: ${fmtNum(tt.used)} used + ${fmtNum(tt.reserved)} reserved of ${fmtNum(budgetMax)}`, held, Number(budgetMax)),
      el('h3', { text: 'Kill switches' }),
      el('div', { class: 'filters' }, t.disabled_reason ? null : field('Reason', reason), teamSwitch),
      disabledAgents.length ? el('ul', { class: 'disabled-agents' }, disabledAgents.map(([name, why]) => {
        const on = el('button', { type: 'button', text: 'Enable', 'aria-label': `Enable agent ${name}` });
        on.addEventListener('click', () => patch({ agents: { [name]: { disabled: false } } }));
        return el('li', {}, el('code', { text: name }), ` off: ${why || 'no reason'} `, on);
      })) : null,
      el('div', { class: 'filters' }, field('Agent', agentName), field('Reason', agentReason), agentOff),
      err, keys);
    return card;
  }

  function showIssued(k, t) {
    const dismiss = el('button', { type: 'button', text: 'Dismiss' });
    const copy = el('button', { type: 'button', text: 'Copy' });
    const keyText = el('code', { class: 'secret', text: k.key });
    copy.addEventListener('click', () => {
      if (navigator.clipboard) navigator.clipboard.writeText(k.key).then(() => { copy.textContent = 'Copied'; }, () => {});
    });
    dismiss.addEventListener('click', () => fill(issued));
    fill(issued, el('div', { class: 'card issued', role: 'status' },
      el('h2', { text: `New key for ${t.name}` }),
      el('p', { text: 'Shown only this once: store it now.' }), keyText,
      el('p', { class: 'muted', text: k.note || '' }),
      el('div', { class: 'actions' }, copy, dismiss)));
    dismiss.focus();
  }
}

// ---------- boot ----------

async function boot() {
  document.getElementById('sign-out').addEventListener('click', signOut);
  // The skip link moves focus without touching the hash the router reads.
  document.querySelector('a.skip').addEventListener('click', (ev) => { ev.preventDefault(); main().focus(); });
  window.addEventListener('hashchange', route);
  state.key = sessionStorage.getItem(KEY_NAME);
  if (state.key) state.admin = await checkAdmin(state.key);
  route();
}

boot();
