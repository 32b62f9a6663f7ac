// pixdex web app: one file, no framework, no build step. Hash routes; live state from
// Server-Sent Events (/api/v1/events); everything else from pixdex's JSON API.
'use strict';

const $ = (sel, el = document) => el.querySelector(sel);
const main = () => $('#main');
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '—');
const fmtEta = (s) => (s == null ? '—' : s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
const base = (p) => String(p || '').split('/').pop();
// A daemon message for people: `quoted` parts (config keys, commands) shown as code, not as
// backticks; escaped otherwise.
const rich = (s) => esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');
// A path under `root` shown relative to it ("photos/a.jpg"); other paths as they are.
const rel = (p, root) => { const r = String(root || '').replace(/\/+$/, ''); p = String(p || ''); return r && p.startsWith(r + '/') ? p.slice(r.length + 1) : p; };
// A failed job's reason without its file's path in front (the File column shows it), and any
// other path under the root shown relative to it.
const reasonOf = (msg, path, root) => {
  let m = String(msg || '');
  if (path && m.startsWith(path + ': ')) m = m.slice(path.length + 2);
  const r = String(root || '').replace(/\/+$/, '');
  return r ? m.split(r + '/').join('') : m;
};

const state = { snapshot: null, libraryVersion: null, categories: null, signedIn: true };
const listeners = new Set();

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts = {}) {
  const init = { method: opts.method || 'GET', headers: {}, credentials: 'same-origin' };
  if (opts.json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.json);
  } else if (opts.bytes) {
    init.headers['Content-Type'] = opts.bytes.type || 'application/octet-stream';
    init.body = opts.bytes;
  }
  const r = await fetch(path, init);
  let body = null;
  try { body = await r.json(); } catch (_) { /* empty body */ }
  if (r.status === 401) { showSignIn(); }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

// A message under the header (in the page's flow: it covers nothing), gone after 8 s, with ×,
// or when the page changes.
function toast(msg) {
  const t = $('#toast');
  $('#toast-msg').innerHTML = rich(msg);
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(hideToast, 8000);
}
function hideToast() { clearTimeout(toast.timer); $('#toast').hidden = true; }

// Signed out (no cookie, or it expired): the sign-in panel, the indicator says so, and the
// navigation is hidden (it cannot show anything until a token is given).
function showSignIn() {
  if (!state.signedIn) return;
  state.signedIn = false;
  listeners.clear();
  if (state.events) { state.events.close(); state.events = null; }
  const live = $('#live');
  live.textContent = 'signed out';
  live.className = 'live off';
  $('#nav').hidden = true;
  hideToast();
  const failed = new URLSearchParams(location.search).get('login') === 'failed';
  main().innerHTML = `<section class="card" aria-labelledby="si"><h1 id="si">Sign in</h1>
    <p>This pixdex listener is protected by a token. Open the login link the daemon printed when it started
    (<code>http://HOST:PORT/?token=…</code>), or paste the token here.</p>
    ${failed ? '<p class="bad" role="alert">That token was not accepted.</p>' : ''}
    <form id="signin" class="row"><div class="grow"><label for="tok">Token</label>
    <input id="tok" type="password" autocomplete="current-password" required></div>
    <div><button class="primary" type="submit">Sign in</button></div></form></section>`;
  $('#signin').addEventListener('submit', (e) => {
    e.preventDefault();
    location.href = '/?token=' + encodeURIComponent($('#tok').value.trim());
  });
  $('#tok').focus();
}

// ------------------------------------------------------------------ live updates (SSE)
function connectEvents() {
  const live = $('#live');
  const es = new EventSource('/api/v1/events');
  state.events = es;
  es.addEventListener('snapshot', (e) => {
    live.textContent = 'live';
    live.className = 'live on';
    const snap = JSON.parse(e.data);
    const libChanged = state.libraryVersion && JSON.stringify(state.libraryVersion) !== JSON.stringify(snap.library);
    state.snapshot = snap;
    state.libraryVersion = snap.library;
    for (const f of listeners) f(snap, libChanged);
  });
  es.onerror = () => {
    if (!state.signedIn) return;
    live.textContent = 'reconnecting…';
    live.className = 'live off';
    // The stream also fails when the token cookie is gone or expired: ask once (a 401 shows
    // the sign-in) instead of saying "reconnecting…" forever.
    api('/api/v1/categories?page=1&page_size=1').catch(() => {});
  };
}

function onLive(f) {
  listeners.add(f);
  if (state.snapshot) f(state.snapshot, false);
}

// ------------------------------------------------------------------ router
const routes = [
  [/^#\/library$/, 'library', pageLibrary],
  [/^#\/new$/, 'new', pageNew],
  [/^#\/sessions$/, 'sessions', pageSessions],
  [/^#\/sessions\/(\d+)$/, 'sessions', pageSession],
  [/^#\/search$/, 'search', pageSearch],
  [/^#\/health$/, 'health', pageHealth],
];

function route() {
  if (!state.signedIn) return;
  listeners.clear();
  hideToast();
  const h = location.hash || '#/library';
  for (const [re, nav, page] of routes) {
    const m = h.match(re);
    if (m) {
      document.querySelectorAll('nav a').forEach((a) => a.toggleAttribute('aria-current', false));
      const link = $(`nav a[data-nav="${nav}"]`);
      if (link) link.setAttribute('aria-current', 'page');
      page(...m.slice(1)).catch((e) => { if (state.signedIn) main().innerHTML = `<p class="bad" role="alert">${esc(e.message)}</p>`; });
      main().focus({ preventScroll: true });
      return;
    }
  }
  location.hash = '#/library';
}

async function categories() {
  if (!state.categories) state.categories = (await api('/api/v1/categories?page=1&page_size=100')).items;
  return state.categories;
}

// ------------------------------------------------------------------ Library
// A folder without images says what it holds: nothing at all, or only other files.
const dirNote = (d) => (d.imageCount > 0 ? ''
  : `<span class="muted note">${d.otherFiles ? `no images · ${plural(d.otherFiles, 'other file')}` : 'empty'}</span>`);
async function pageLibrary() {
  main().innerHTML = `<h1>Library</h1>
    <div class="row" style="margin-bottom:8px"><div class="grow"><label for="lib-filter">Filter folders</label>
    <input id="lib-filter" type="search" placeholder="part of a folder path" autocomplete="off"></div></div>
    <div id="lib">Loading…</div>`;
  // A library of a thousand folders: the table shows the first PAGE matching rows (more on
  // demand), and live changes redraw it at most every 5 s, not on every SSE tick.
  const PAGE = 300;
  let lib = null;
  let shown = PAGE;
  const draw = () => {
    const el = $('#lib');
    if (!el || !lib) return;
    if (!lib.roots.length) {
      el.innerHTML = '<div class="card">No library root is configured. Add one to <code>library.roots</code> in the config file and restart the daemon.</div>';
      return;
    }
    const f = ($('#lib-filter')?.value || '').trim().toLowerCase();
    el.innerHTML = lib.roots.map((r) => {
      const dirs = f ? r.directories.filter((d) => d.path.toLowerCase().includes(f)) : r.directories;
      const rows = dirs.slice(0, shown);
      const more = dirs.length - rows.length;
      return `<section class="card" aria-label="Root ${esc(r.path)}">
      <h2>${esc(r.path)}</h2>
      <p class="muted">Watcher: <b>${esc(r.watchMode)}</b>${r.note ? ` — ${esc(r.note)}` : ''} · ${plural(r.imageCount, 'image')}, ${r.indexedCount} indexed
      · last indexed ${fmtTime(r.lastIndexedAt)}</p>
      <table class="tree"><caption class="muted" style="text-align:left">${f ? `${plural(dirs.length, 'folder')} matching “${esc(f)}”` : plural(dirs.length, 'folder')}</caption><thead><tr><th scope="col">Folder</th><th class="num" scope="col">Images</th>
      <th class="num" scope="col">Indexed</th><th scope="col" class="hide-sm">Last indexed</th></tr></thead><tbody>
      ${rows.map((d) => `<tr data-dir="${esc(d.path)}" data-depth="${d.depth}"><td style="padding-left:${8 + d.depth * 18}px">${d.depth ? '└ ' : ''}${esc(f ? d.path.slice(r.path.length + 1) : d.name)}${dirNote(d)}</td>
        <td class="num">${d.imageCount}</td><td class="num">${d.indexedCount}</td><td class="hide-sm">${fmtTime(d.lastIndexedAt)}</td></tr>`).join('')}
      </tbody></table>${more > 0 ? `<button type="button" class="lib-more">Show ${Math.min(more, PAGE)} more of ${more}</button>` : ''}</section>`;
    }).join('');
    document.querySelectorAll('.lib-more').forEach((b) => b.addEventListener('click', () => { shown += PAGE; draw(); }));
  };
  const load = async () => { lib = await api('/api/v1/library'); draw(); };
  await load();
  $('#lib-filter').addEventListener('input', () => { shown = PAGE; draw(); });
  let last = Date.now();
  let timer = null;
  onLive((_, libChanged) => {
    if (!libChanged || timer) return;
    timer = setTimeout(() => { timer = null; last = Date.now(); load().catch(() => {}); }, Math.max(0, last + 5000 - Date.now()));
  });
}

// ------------------------------------------------------------------ New session
// "Session 2025-01-31 14:05:09" (local time, to the second).
const defaultName = () => {
  const d = new Date();
  const p2 = (n) => String(n).padStart(2, '0');
  return `Session ${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
};
async function pageNew() {
  const [lib, cats] = await Promise.all([api('/api/v1/library'), categories()]);
  main().innerHTML = `<h1>New session</h1><form id="ns" class="card" novalidate>
    <div class="row">
      <div class="grow"><label for="ns-name">Name</label><input id="ns-name" type="text" required value="${esc(defaultName())}"></div>
      <div class="grow"><label for="ns-root">Library folder</label><select id="ns-root">${lib.roots.map((r) => `<option>${esc(r.path)}</option>`).join('')}</select></div>
      <div><label for="ns-cat">Category</label><select id="ns-cat">${cats.map((c) => `<option value="${c.id}">${esc(c.name)}</option>`).join('')}</select></div>
    </div>
    <fieldset style="border:none;padding:0;margin:14px 0 0"><legend><h2 style="margin:0">Subdirectories</h2></legend>
      <p class="muted" id="ns-hint">Folders with images are selected.</p>
      <div class="row" style="margin-bottom:6px"><button type="button" id="ns-all">Select all with images</button><button type="button" id="ns-none">Select none</button></div>
      <div class="subdirs" id="ns-subdirs">Scanning…</div>
    </fieldset>
    <div id="ns-verdict" class="verdict" role="status" aria-live="polite">Checking…</div>
    <button class="primary" id="ns-start" type="submit" disabled aria-describedby="ns-verdict">Start indexing</button>
  </form>`;
  let scan = null;
  const selected = () => [...document.querySelectorAll('#ns-subdirs input:checked')].map((i) => i.value);
  let seq = 0;
  const check = async () => {
    const my = ++seq;
    const btn = $('#ns-start');
    btn.disabled = true;
    try {
      const a = await api('/api/v1/training/admission', { method: 'POST', json: { rootPath: $('#ns-root').value, subdirectories: selected(), listed: scan ? scan.subdirectories.length : 0 } });
      if (my !== seq) return;
      const v = $('#ns-verdict');
      v.className = 'verdict' + (a.canStart ? ' ok' : '');
      v.innerHTML = `<b>${rich(a.detail)}</b>${a.diagnostics.suggestion ? `<br>${rich(a.diagnostics.suggestion)}` : ''}`;
      btn.disabled = !a.canStart;
    } catch (e) {
      $('#ns-verdict').innerHTML = `<b class="bad">${esc(e.message)}</b>`;
    }
  };
  const rescan = async () => {
    $('#ns-subdirs').textContent = 'Scanning…';
    scan = await api('/api/v1/training/directories/scan', { method: 'POST', json: { rootPath: $('#ns-root').value, recursive: true } });
    const rows = scan.subdirectories;
    $('#ns-subdirs').innerHTML = rows.length ? `<table><thead><tr><th scope="col">Use</th><th scope="col">Folder</th><th class="num" scope="col">Images</th><th class="num hide-sm" scope="col">Other files</th></tr></thead><tbody>
      ${rows.map((s, i) => `<tr><td><input type="checkbox" id="sd${i}" value="${esc(s.path)}" ${s.imageCount > 0 ? 'checked' : ''}></td>
      <td><label for="sd${i}" style="color:inherit;font-size:inherit;margin:0">${esc(s.isRoot ? '(top level)' : s.name)}</label></td><td class="num">${s.imageCount}</td><td class="num hide-sm">${s.unsupportedFiles}</td></tr>`).join('')}
      </tbody></table>` : '<p class="muted">No subdirectories under this folder.</p>';
    document.querySelectorAll('#ns-subdirs input').forEach((i) => i.addEventListener('change', check));
    await check();
  };
  $('#ns-root').addEventListener('change', () => rescan().catch((e) => toast(e.message)));
  $('#ns-all').addEventListener('click', () => { scan.subdirectories.forEach((s, i) => { $('#sd' + i).checked = s.imageCount > 0; }); check(); });
  $('#ns-none').addEventListener('click', () => { document.querySelectorAll('#ns-subdirs input').forEach((i) => { i.checked = false; }); check(); });
  $('#ns').addEventListener('submit', async (e) => {
    e.preventDefault();
    const btn = $('#ns-start');
    btn.disabled = true;
    try {
      const body = { name: $('#ns-name').value, rootPath: $('#ns-root').value, subdirectories: selected(), categoryId: Number($('#ns-cat').value) };
      let s;
      // The name was left as proposed and another session took it (started the same second):
      // take the next free one, "… (2)", instead of refusing. Any other name is kept as typed.
      for (let n = 2; ; n++) {
        try {
          s = await api('/api/v1/training/sessions', { method: 'POST', json: body });
          break;
        } catch (err) {
          if (err.status !== 409 || !/^Session \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(body.name) || n > 20) throw err;
          body.name = $('#ns-name').value.replace(/ \(\d+\)$/, '') + ` (${n})`;
        }
      }
      $('#ns-name').value = body.name;
      await api(`/api/v1/training/sessions/${s.id}/start`, { method: 'POST' });
      location.hash = `#/sessions/${s.id}`;
    } catch (err) {
      toast(err.message);
      btn.disabled = false;
    }
  });
  if (lib.roots.length) await rescan();
  else $('#ns-verdict').innerHTML = '<b>No library root is configured.</b><br>Add one to <code>library.roots</code> in the config and restart the daemon.';
}

// ------------------------------------------------------------------ Sessions
// A cancelled session: what was done and what never was, out of every job it had.
const cancelledText = (js) => {
  const all = js.completed + js.failed + js.skipped + js.cancelled + js.pending + js.running;
  return `Cancelled — ${js.completed} of ${plural(all, 'image')} indexed${js.failed ? `, ${js.failed} failed` : ''}${js.skipped ? `, ${js.skipped} skipped` : ''}, ${js.cancelled + js.pending + js.running} never indexed`;
};
async function pageSessions() {
  main().innerHTML = '<h1>Sessions</h1><div id="sl" class="card">Waiting for live data…</div>';
  onLive((snap) => {
    const el = $('#sl');
    if (!el) return;
    el.innerHTML = snap.sessions.length ? `<table><thead><tr><th scope="col">Session</th><th scope="col">Status</th><th scope="col">Progress</th><th class="num hide-sm" scope="col">Images/min</th><th class="num hide-sm" scope="col">ETA</th></tr></thead><tbody>
      ${snap.sessions.map((s) => `<tr><td><a href="#/sessions/${s.id}">${esc(s.name)}</a><div class="muted hide-sm" style="font-size:12px">${esc(s.rootPath)}</div></td>
      <td><span class="pill ${s.status}">${s.status}</span></td>
      <td>${s.status === 'cancelled' ? esc(cancelledText(s.progress.jobsSummary)) : `${s.progress.progress.current} / ${s.progress.progress.total} (${s.progress.progress.percentage}%)`}${s.progress.waitingFor ? `<div class="waiting">Waiting for ${rich(s.progress.waitingFor)}</div>` : ''}</td>
      <td class="num hide-sm">${s.progress.progress.imagesPerMinute}</td><td class="num hide-sm">${fmtEta(s.progress.progress.etaSeconds)}</td></tr>`).join('')}</tbody></table>`
      : '<p>No session yet. <a href="#/new">Create one</a>.</p>';
  });
}

async function pageSession(id) {
  main().innerHTML = `<h1 id="s-title">Session ${id}</h1><div class="card">
    <div class="row" style="justify-content:space-between"><div><span id="s-status" class="pill">…</span> <span id="s-root" class="muted"></span></div>
    <div class="actions" role="group" aria-label="Session actions">
      <button id="a-pause">Pause</button><button id="a-resume">Resume</button><button id="a-cancel">Cancel</button><button id="a-restart">Restart failed</button></div></div>
    <div style="margin-top:14px"><div class="bar" role="progressbar" id="s-bar" aria-label="Progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span style="width:0"></span></div>
    <p id="s-pct" aria-live="polite" style="margin:6px 0 0">0%</p></div>
    <div class="stats" id="s-stats"></div><p id="s-note" class="muted"></p></div>
    <h2 id="s-pipe">Daemon pipeline — all sessions</h2><div class="card"><p class="muted" style="margin-top:0">The daemon's stages since it started, shared by every session: this session's own numbers are above.</p><table><caption class="muted" style="text-align:left">Daemon-wide counters</caption><thead><tr><th scope="col">Stage</th><th class="num" scope="col">Items</th><th class="num" scope="col">Failures</th><th class="num" scope="col">Queue</th><th class="num hide-sm" scope="col">Busy</th></tr></thead><tbody id="s-stages"></tbody></table></div>
    <h2>Failed jobs</h2><div class="card" id="s-failed">None.</div>`;
  const act = (path) => async () => {
    try { const r = await api(`/api/v1/training/sessions/${id}/${path}`, { method: 'POST' }); toast(r.message || 'done'); } catch (e) { toast(e.message); }
  };
  $('#a-pause').onclick = act('pause');
  $('#a-resume').onclick = act('start');
  $('#a-cancel').onclick = act('cancel');
  $('#a-restart').onclick = act('restart?failed_only=true');
  let lastFailed = -1;
  const loadFailed = async (n) => {
    if (n === lastFailed) return;
    lastFailed = n;
    const j = await api(`/api/v1/training/sessions/${id}/jobs?status=failed&page=1&page_size=100`);
    const root = (state.snapshot?.sessions || []).find((x) => String(x.id) === String(id))?.rootPath || '';
    $('#s-failed').innerHTML = j.items.length ? `<table><thead><tr><th scope="col">File</th><th scope="col">Reason</th></tr></thead><tbody>${j.items.map((x) => `<tr><td class="reason" title="${esc(x.path)}">${esc(rel(x.path, root))}</td><td class="reason">${rich(reasonOf(x.errorMessage, x.path, root))}</td></tr>`).join('')}</tbody></table>` : 'None.';
  };
  onLive((snap) => {
    const s = snap.sessions.find((x) => String(x.id) === String(id));
    if (!s || !$('#s-title')) return;
    const p = s.progress.progress;
    const js = s.progress.jobsSummary;
    $('#s-title').textContent = s.name;
    $('#s-status').textContent = s.status;
    $('#s-status').className = 'pill ' + s.status;
    $('#s-root').textContent = s.rootPath;
    $('#s-bar').setAttribute('aria-valuenow', String(p.percentage));
    $('#s-bar span').style.width = p.percentage + '%';
    const d = s.progress.discovery;
    // A start in the background, a cancelled session: say what was and was not done.
    $('#s-pct').textContent = s.status === 'discovering' && d
      ? `Discovering — ${d.queued} of ${plural(d.expected, 'image')} queued`
      : s.status === 'cancelled'
        ? cancelledText(js)
        : `${p.percentage}% — ${p.current} of ${plural(p.total, 'image')}`;
    $('#s-stats').innerHTML = [['Images/min', p.imagesPerMinute], ['ETA', s.status === 'cancelled' ? '—' : fmtEta(p.etaSeconds)], ['Completed', js.completed], ['Pending', js.pending], ['Running', js.running], ['Failed', js.failed], ['Skipped', js.skipped], ...(js.cancelled ? [['Cancelled', js.cancelled]] : [])]
      .map(([k, v]) => `<div class="stat"><span class="muted">${k}</span><b>${v}</b></div>`).join('');
    // A running session whose jobs cannot move says why and the fix (the model cannot load,
    // the vector store is away); it goes on by itself once that is fixed.
    $('#s-note').innerHTML = s.progress.waitingFor
      ? `<span class="waiting">Waiting for ${rich(s.progress.waitingFor)}</span>`
      : rich(s.lastError || s.pendingReason || '');
    const st = s.status;
    $('#a-pause').disabled = st !== 'running';
    $('#a-resume').disabled = !(st === 'paused' || st === 'failed' || st === 'pending');
    $('#a-resume').textContent = st === 'pending' ? 'Start' : 'Resume';
    $('#a-cancel').disabled = !['running', 'paused', 'pending', 'discovering'].includes(st);
    $('#a-restart').disabled = js.failed === 0 || st === 'running';
    $('#s-stages').innerHTML = snap.pipeline.stages.map((x) => `<tr><td>${x.name}</td><td class="num">${x.items}</td><td class="num">${x.failures}</td><td class="num">${x.queueDepth}/${x.queueCapacity}</td><td class="num hide-sm">${Math.round(x.busyShare * 100)}%</td></tr>`).join('')
      || `<tr><td colspan="5">${esc(snap.pipeline.reason || 'pipeline not running')}</td></tr>`;
    loadFailed(js.failed).catch(() => {});
  });
}

// ------------------------------------------------------------------ Search
async function pageSearch() {
  const [cats, lib] = await Promise.all([categories(), api('/api/v1/library')]);
  const dirs = lib.roots.flatMap((r) => r.directories.filter((d) => d.imageCount > 0).map((d) => d.path));
  main().innerHTML = `<h1>Search</h1><form id="sf" class="card" role="search">
    <div class="row"><div class="grow"><label for="q">Words</label><input id="q" type="search" placeholder="e.g. cat, espresso, sports car"></div>
    <div><button class="primary" type="submit">Search</button></div></div>
    <div class="row" style="margin-top:10px">
      <div><label for="f-cat">Category</label><select id="f-cat"><option value="">Any</option>${cats.map((c) => `<option value="${c.id}">${esc(c.name)}</option>`).join('')}</select></div>
      <div><label for="f-from">Indexed from</label><input id="f-from" type="date"></div>
      <div><label for="f-to">Indexed to</label><input id="f-to" type="date"></div>
      <div class="grow"><label for="f-dir">Folder</label><select id="f-dir"><option value="">Anywhere</option>${dirs.map((d) => `<option>${esc(d)}</option>`).join('')}</select></div>
      <div><label for="f-min">Image matches</label><select id="f-min"><option value="0.5">Close (score ≥ 0.50)</option><option value="0.3" selected>Related (score ≥ 0.30)</option><option value="0">All</option></select></div>
    </div>
    <div id="drop" class="drop" style="margin-top:12px">Search by example: drop an image here, or <label for="pick" class="btn" style="display:inline-block;color:var(--fg);font-size:inherit">choose a file</label>
    <input id="pick" type="file" accept="image/jpeg,image/png,image/webp" style="position:absolute;left:-9999px"></div>
  </form><p id="s-info" role="status" aria-live="polite" class="muted"></p><ul id="results" class="grid" aria-label="Results"></ul>`;
  const filters = () => {
    const f = {};
    if ($('#f-cat').value) f.categoryId = Number($('#f-cat').value);
    if ($('#f-from').value) f.indexedFrom = new Date($('#f-from').value + 'T00:00:00').toISOString();
    if ($('#f-to').value) f.indexedTo = new Date($('#f-to').value + 'T23:59:59').toISOString();
    if ($('#f-dir').value) f.pathPrefix = $('#f-dir').value;
    return f;
  };
  const qs = () => { const f = filters(); const p = new URLSearchParams({ limit: '40' }); if (f.categoryId) p.set('category_id', f.categoryId); if (f.pathPrefix) p.set('path_prefix', f.pathPrefix); return p.toString(); };
  // `byImage`: an image search or Similar, whose results go down to unrelated images: those
  // below the "Image matches" cut-off are held back (and counted, with a button to show them).
  let last = null;
  const run = async (what, fn, byImage) => {
    $('#s-info').textContent = `Searching ${what}…`;
    // An image search is not about the words typed before: clear them.
    if (byImage) $('#q').value = '';
    try {
      const r = await fn();
      last = { r, what, byImage };
      showResults(r, what, byImage ? Number($('#f-min').value) : 0);
    } catch (e) {
      $('#s-info').innerHTML = `<span class="bad">${esc(e.message)}</span>`;
    }
  };
  $('#f-min').addEventListener('change', () => { if (last && last.byImage) showResults(last.r, last.what, Number($('#f-min').value)); });
  const upload = (file) => run(`like ${file.name}`, () => api('/api/v1/search/image?' + qs(), { method: 'POST', bytes: file }), true);
  $('#sf').addEventListener('submit', (e) => {
    e.preventDefault();
    // Sent as typed: the daemon checks for blank queries, and CLIP's tokenizer cleans text as open_clip does.
    const typed = $('#q').value;
    const q = typed.trim();
    if (!q) { $('#s-info').textContent = 'Type some words, or drop an image.'; return; }
    run(`for “${q}”`, () => api('/api/v1/search', { method: 'POST', json: { query: typed, limit: 40, filters: filters() } }));
  });
  $('#pick').addEventListener('change', (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); const f = e.dataTransfer.files[0]; if (f) upload(f); });
  window.searchSimilar = (id, path) => run(`similar to ${path ? base(path) : `image ${id}`}`, () => api(`/api/v1/search/similar/${id}?` + qs()), true);
}

// `min`: the score cut-off (0: none); results below it are counted and offered behind a button.
function showResults(r, what, min = 0) {
  const all = r.results || [];
  const items = all.filter((h) => h.score >= min);
  const below = all.length - items.length;
  const via = r.wordsVia === 'clip' ? ' by meaning (CLIP)' : r.wordsVia === 'labels' ? ' by ImageNet labels' : '';
  const model = r.model ? ` · model ${r.model}` : '';
  const cut = below ? ` with score ≥ ${min.toFixed(2)} · ${below} more below` : '';
  $('#s-info').textContent = (items.length ? `${plural(items.length, 'result')} ${what}${via}${r.matchedLabels && r.matchedLabels.length ? ` (labels: ${r.matchedLabels.slice(0, 3).join('; ')})` : ''}${cut}` : below ? `No results ${what}${cut}.` : (r.hint || `No results ${what}.`)) + model;
  $('#s-info').title = r.note || '';
  if (below) {
    const b = document.createElement('button');
    b.type = 'button';
    b.id = 's-more';
    b.style.marginLeft = '8px';
    b.textContent = `Show ${below} more`;
    b.addEventListener('click', () => { $('#f-min').value = '0'; showResults(r, what, 0); });
    $('#s-info').append(' ', b);
  }
  $('#results').innerHTML = items.map((h) => `<li data-id="${h.assetId}">
    <img src="/api/v1/images/${h.assetId}/thumbnail" alt="${esc(base(h.path))}" loading="lazy" tabindex="0" data-open="${h.assetId}">
    <div class="meta"><span class="name" title="${esc(h.path)}">${esc(base(h.path))}</span><span class="pill" aria-label="score">${h.score.toFixed(3)}</span></div>
    <div class="meta"><button type="button" data-similar="${h.assetId}" data-path="${esc(h.path)}">Similar</button>${(h.similarCopies || []).length ? `<span class="pill copies" title="${esc(h.similarCopies.map((c) => `${c.path}${c.identical ? ' (identical)' : ''}`).join('\n'))}">+${h.similarCopies.length} similar cop${h.similarCopies.length === 1 ? 'y' : 'ies'}</span>` : ''}</div></li>`).join('');
  document.querySelectorAll('#results [data-similar]').forEach((b) => b.addEventListener('click', () => window.searchSimilar(b.dataset.similar, b.dataset.path)));
  document.querySelectorAll('#results [data-open]').forEach((img) => {
    const open = () => openDetail(img.dataset.open);
    img.addEventListener('click', open);
    img.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
  });
}

async function openDetail(id) {
  const d = $('#detail');
  const [a, sim] = await Promise.all([api(`/api/v1/assets/${id}`), api(`/api/v1/search/similar/${id}?limit=12`).catch(() => ({ results: [] }))]);
  d.innerHTML = `<div class="detail"><img class="full" src="/api/v1/images/${id}/full" alt="${esc(base(a.path))}">
    <div><h2 id="detail-title">${esc(base(a.path))}</h2><p><code>${esc(a.path)}</code></p>
    <p>${a.width || '?'} × ${a.height || '?'} · ${(a.fileSize / 1024).toFixed(0)} KiB<br>Indexed ${fmtTime(a.indexedAt)}</p>
    <h2>Labels</h2><ul>${(a.labels || []).map((l) => `<li>${esc(l.label)} <span class="muted">${(l.probability * 100).toFixed(1)}%</span></li>`).join('') || '<li class="muted">none</li>'}</ul>
    <button type="button" id="d-close" class="primary">Close</button></div></div>
    <h2 style="padding:0 16px">Similar</h2><div class="strip">${sim.results.map((h) => `<img src="/api/v1/images/${h.assetId}/thumbnail" alt="${esc(base(h.path))}" tabindex="0" data-open="${h.assetId}">`).join('')}</div>`;
  $('#d-close').onclick = () => d.close();
  d.querySelectorAll('[data-open]').forEach((img) => {
    const open = () => openDetail(img.dataset.open);
    img.addEventListener('click', open);
    img.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
  });
  if (!d.open) d.showModal();
  $('#d-close').focus();
}

// ------------------------------------------------------------------ Health
// Everything shown arrives on the live stream (each snapshot carries the health report); the
// report is fetched once only when the page opens before the first snapshot.
async function pageHealth() {
  main().innerHTML = '<h1>Health</h1><div id="h">Loading…</div><p class="muted" id="h-note">Updated live.</p>';
  const render = (h) => {
    const el = $('#h');
    if (!el || !h) return;
    const row = (k, v, good = true) => `<tr><th scope="row">${k}</th><td class="${good ? '' : 'bad'}">${v}</td></tr>`;
    el.innerHTML = `<div class="card"><p><b class="${h.state === 'healthy' ? 'good' : 'bad'}">${esc(h.state)}</b> · pixdex ${esc(h.version)}</p>
      ${h.problems.length ? `<ul class="bad">${h.problems.map((p) => `<li class="reason">${rich(p)}</li>`).join('')}</ul>` : ''}
      <table><tbody>
      ${row('Catalog', `${esc(h.catalog)} — ${h.catalogOk ? plural(h.assets, 'image') : 'unreachable'}`, h.catalogOk)}
      ${row('Vector store', `${esc(h.vectorStore.backend || 'not open')} — ${h.vectorStore.points == null ? '?' : plural(h.vectorStore.points, 'vector')}`)}
      ${row('Model', `${esc(h.model.name)} on ${esc(h.model.device || '—')}${h.model.reason ? ` — ${rich(h.model.reason)}` : ''}`, h.model.running)}
      ${row('Watcher', h.watcher.roots.map((r) => `${esc(r.path)}: ${esc(r.mode)}${r.note ? ` (${rich(r.note)})` : ''}`).join('<br>') || 'no roots')}
      ${row('Queues', h.queues.map((q) => `${esc(q.stage)} ${q.depth}/${q.capacity}`).join(' · ') || '—')}
      </tbody></table></div>`;
  };
  if (!state.snapshot?.health) render(await api('/api/v1/health'));
  onLive((snap) => render(snap.health));
}

// ------------------------------------------------------------------ start
window.addEventListener('hashchange', route);
$('#toast-x').addEventListener('click', hideToast);
(async () => {
  try {
    await api('/api/v1/library');
  } catch (e) {
    if (e.status === 401) return;
  }
  connectEvents();
  route();
})();
