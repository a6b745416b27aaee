// factd operator console: one ES module, no dependencies.  Every datum comes
// from factd's public API with the operator's key (kept in sessionStorage);
// the screens are hash routes, so they can be bookmarked and the back button
// works.  Nothing app-specific lives here: aggregates, sagas and projections
// come from GET /app.

const KEY_STORE = 'factd.console.key';
const main = document.getElementById('main');
const who = document.getElementById('who');

let key = sessionStorage.getItem(KEY_STORE) || '';
let me = null;   // GET /whoami: {role, keys_required}
let app = null;  // GET /app
let view = null; // {abort: AbortController, timers: []} of the screen on display

// ---- DOM ------------------------------------------------------------------

/** An element: h('a', {href: '#/'}, 'text', child...).  Text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
	const el = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k === 'class') el.className = v;
		else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
		else if (k === 'text') el.textContent = v;
		else el.setAttribute(k, v === true ? '' : String(v));
	}
	for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
	return el;
}
const link = (href, text, attrs = {}) => h('a', { href, ...attrs }, text);
const badge = (status) => h('span', { class: `badge s-${status}` }, String(status).replace(/_/g, ' '));
const json = (v) => h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
const loading = (what) => h('p', { class: 'state', role: 'status' }, `Loading ${what}…`);
const empty = (text) => h('p', { class: 'state empty' }, text);
const when = (ts) => (ts ? ts.replace('T', ' ').replace(/\.(\d{3})\d*Z$/, '.$1Z') : '—');
const num = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '—');
const enc = encodeURIComponent;

function table(head, rows, caption) {
	return h('div', { class: 'scroll' },
		h('table', {},
			caption ? h('caption', { class: 'note' }, caption) : null,
			h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col', class: /^(Streams|Events|Version|Lag|Attempts|Count)/.test(c) ? 'num' : null }, c)))),
			h('tbody', {}, rows)));
}

function show(...nodes) {
	main.replaceChildren(...nodes);
}

// ---- the API -----------------------------------------------------------------

class ApiError extends Error {
	constructor(status, problem, message) {
		super(message || problem?.detail || problem?.title || `HTTP ${status}`);
		this.status = status;
		this.problem = problem;
	}
}

/** A request to factd with the operator's key; JSON in and out.  Throws ApiError (status 0: no answer). */
async function api(path, { method = 'GET', signal, text = false, headers = {} } = {}) {
	const h2 = { Accept: text ? 'text/plain' : 'application/json', ...headers };
	if (key) h2.Authorization = `Bearer ${key}`;
	let res;
	try {
		res = await fetch(path, { method, headers: h2, signal, cache: 'no-store' });
	} catch (e) {
		if (e.name === 'AbortError') throw e;
		throw new ApiError(0, null, 'factd cannot be reached (the network is down or the server stopped)');
	}
	const body = await res.text().catch(() => '');
	const isJson = /json/.test(res.headers.get('Content-Type') || '');
	let doc = null;
	if (isJson && body) {
		try {
			doc = JSON.parse(body);
		} catch {
			doc = null;
		}
	}
	if (!res.ok) throw new ApiError(res.status, doc);
	return text ? body : doc;
}

/** A screen's error state, with what the operator can do about it. */
function errorState(err, retry) {
	if (err?.name === 'AbortError') return h('span');
	const box = h('div', { class: 'state error', role: 'alert' });
	const s = err instanceof ApiError ? err.status : -1;
	if (s === 401) {
		key = '';
		sessionStorage.removeItem(KEY_STORE);
		return keyPrompt(err.problem?.detail || 'factd needs an API key.');
	}
	if (s === 403)
		box.append(h('strong', {}, 'Not allowed'), `This needs a key with the ${err.problem?.required_role || 'admin'} role; yours has ${err.problem?.key_role || me?.role || 'another'}.`);
	else if (s === 0) box.append(h('strong', {}, 'No connection'), err.message);
	else if (s === 503) box.append(h('strong', {}, 'factd is unavailable'), `${err.message} (HTTP 503). Try again shortly.`);
	else if (s === 404) box.append(h('strong', {}, 'Not found'), err.message);
	else box.append(h('strong', {}, s > 0 ? `Error ${s}` : 'Error'), err?.message || String(err));
	if (retry) box.append(' ', h('button', { type: 'button', onclick: retry }, 'Try again'));
	return box;
}

// ---- keys and roles ------------------------------------------------------------

function keyPrompt(why) {
	const input = h('input', { id: 'key-input', type: 'password', name: 'key', autocomplete: 'off', required: true, minlength: 16, spellcheck: 'false' });
	const msg = h('p', { class: 'note', role: 'status' }, why);
	const form = h('form', { class: 'panel keyform', 'aria-labelledby': 'key-title' },
		h('h1', { id: 'key-title' }, 'API key'),
		msg,
		h('label', { for: 'key-input' }, 'Key (kept in this tab only, sent as a Bearer token)', input),
		h('p', {}, h('button', { type: 'submit', class: 'primary' }, 'Use this key')));
	form.addEventListener('submit', async (e) => {
		e.preventDefault();
		key = input.value.trim();
		try {
			const w = await api('/whoami');
			if (w.keys_required && w.role === 'none') throw new ApiError(401, { detail: 'factd does not know this key.' });
			sessionStorage.setItem(KEY_STORE, key);
			me = w;
			app = null;
			renderWho();
			route();
		} catch (err) {
			key = '';
			msg.textContent = err.status === 401 ? 'factd does not know this key. Check it and try again.' : err.message;
			msg.className = 'note state error';
			input.focus();
		}
	});
	queueMicrotask(() => input.focus());
	return form;
}

function renderWho() {
	const parts = [];
	if (me) parts.push(h('span', {}, me.keys_required ? 'Key role: ' : 'No keys configured; role: ', h('strong', { id: 'role' }, me.role)));
	if (key)
		parts.push(h('button', { type: 'button', onclick: () => {
			key = '';
			me = null;
			sessionStorage.removeItem(KEY_STORE);
			renderWho();
			route();
		} }, 'Forget key'));
	who.replaceChildren(...parts);
}

const isAdmin = () => me?.role === 'admin';

async function ensureSession(signal) {
	if (!me) {
		me = await api('/whoami', { signal });
		if (me.keys_required && me.role === 'none') throw new ApiError(401, { detail: 'factd needs an API key.' });
		renderWho();
	}
	if (!app) {
		app = await api('/app', { signal });
		document.getElementById('app-name').textContent = app.name;
		document.title = `factd console: ${app.name}`;
	}
}

/** The app's aggregate type whose streams `stream` belongs to ("<category>-<id>"), with the id. */
function aggregateOf(stream) {
	for (const a of app?.aggregates || []) {
		if (stream.startsWith(`${a.category}-`) && stream.length > a.category.length + 1) return { type: a, id: stream.slice(a.category.length + 1) };
	}
	return null;
}
const fill = (pattern, id) => pattern.replace(/\{[^}]+\}/, enc(id));

// ---- confirmation ----------------------------------------------------------------

function confirmAction(title, text, ok) {
	const dlg = document.getElementById('confirm');
	document.getElementById('confirm-title').textContent = title;
	document.getElementById('confirm-text').textContent = text;
	document.getElementById('confirm-ok').textContent = ok;
	return new Promise((resolve) => {
		dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
		dlg.returnValue = 'cancel';
		dlg.showModal();
		dlg.querySelector('button[value=cancel]').focus();
	});
}

// ---- routing -----------------------------------------------------------------------

function parseHash() {
	const raw = location.hash.replace(/^#/, '') || '/';
	const [p, q = ''] = raw.split('?');
	const parts = p.split('/').filter(Boolean).map((s) => {
		try {
			return decodeURIComponent(s);
		} catch {
			return s;
		}
	});
	return { parts, query: new URLSearchParams(q) };
}

function hashFor(path, params = {}) {
	const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''));
	const s = q.toString();
	return `#${path}${s ? `?${s}` : ''}`;
}

const screens = {
	'': overview,
	streams: (r, v) => (r.parts.length > 1 ? streamView(r, r.parts.slice(1).join('/'), v) : streamsList(r, v)),
	live: liveView,
	sagas: (r, v) => (r.parts.length > 1 ? sagaView(r, r.parts[1], v) : sagasList(r, v)),
	projections: projectionsView,
	trace: traceView,
};

async function route() {
	if (view) {
		view.abort.abort();
		view.timers.forEach(clearTimeout);
	}
	const r = parseHash();
	const name = r.parts[0] || '';
	view = { abort: new AbortController(), timers: [] };
	const v = view;
	for (const a of document.querySelectorAll('nav a')) {
		const cur = a.dataset.screen === (name || 'overview');
		if (cur) a.setAttribute('aria-current', 'page');
		else a.removeAttribute('aria-current');
	}
	const screen = screens[name];
	try {
		await ensureSession(v.abort.signal);
		if (v !== view) return;
		if (!screen) {
			show(h('h1', {}, 'Not found'), empty(`The console has no screen ${location.hash}.`), link('#/', 'Go to the overview'));
			return;
		}
		await screen(r, v);
	} catch (err) {
		if (err?.name === 'AbortError' || v !== view) return;
		show(errorState(err, route));
	}
}

/** Run fn again after ms while the screen is on display. */
function later(v, ms, fn) {
	v.timers.push(setTimeout(() => {
		if (v === view) fn();
	}, ms));
}

// ---- #/ overview -----------------------------------------------------------------------

/** Prometheus text -> [{name, labels, value}]. */
function parseMetrics(text) {
	const out = [];
	for (const line of text.split('\n')) {
		const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
		if (!m) continue;
		const labels = {};
		for (const l of (m[3] || '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
		out.push({ name: m[1], labels, value: Number(m[4]) });
	}
	return out;
}

function sampleOf(metrics) {
	const sum = (name, f = () => true) => metrics.filter((m) => m.name === name && f(m.labels)).reduce((a, m) => a + m.value, 0);
	const buckets = new Map();
	for (const m of metrics)
		if (m.name === 'factd_http_request_duration_seconds_bucket' && m.labels.route !== '/events/stream')
			buckets.set(m.labels.le, (buckets.get(m.labels.le) || 0) + m.value);
	return {
		at: Date.now() / 1000,
		start: sum('factd_process_start_time_seconds'),
		events: sum('factd_events_appended_total'),
		appends: sum('factd_appends_total', (l) => l.result === 'ok'),
		reqCount: sum('factd_http_request_duration_seconds_count', (l) => l.route !== '/events/stream'),
		reqSum: sum('factd_http_request_duration_seconds_sum', (l) => l.route !== '/events/stream'),
		buckets,
		sagas: metrics.filter((m) => m.name === 'factd_sagas'),
		overdue: sum('factd_saga_overdue'),
	};
}

function rates(cur, prev) {
	const base = prev || { at: cur.start, events: 0, appends: 0, reqCount: 0, reqSum: 0, buckets: new Map() };
	const dt = Math.max(cur.at - base.at, 0.001);
	const n = cur.reqCount - base.reqCount;
	let p95 = null;
	if (n > 0) {
		const les = [...cur.buckets.keys()].sort((a, b) => Number(a === '+Inf' ? Infinity : a) - Number(b === '+Inf' ? Infinity : b));
		for (const le of les) {
			if (cur.buckets.get(le) - (base.buckets.get(le) || 0) >= 0.95 * n) {
				p95 = le;
				break;
			}
		}
	}
	return {
		window: prev ? `the last ${Math.round(dt)} s` : 'since factd started',
		eventsPerS: (cur.events - base.events) / dt,
		appendsPerS: (cur.appends - base.appends) / dt,
		meanMs: n > 0 ? ((cur.reqSum - base.reqSum) / n) * 1000 : null,
		p95,
	};
}

const ms = (v) => (v === null ? '—' : `${v < 10 ? v.toFixed(2) : v.toFixed(0)} ms`);
const le = (v) => (v === null ? '—' : v === '+Inf' ? '> 10 s' : `≤ ${ms(Number(v) * 1000)}`);

async function overview(r, v) {
	show(h('h1', {}, 'Overview'), loading('the overview'));
	let prev = null;
	const tick = async () => {
		const signal = v.abort.signal;
		const [metricsText, projections, failed, compensating, running] = await Promise.all([
			api('/metrics', { signal, text: true }).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
			api('/projections', { signal }),
			api('/sagas?status=failed&limit=20', { signal }),
			api('/sagas?status=compensating&limit=20', { signal }),
			api('/sagas?status=running&limit=100', { signal }),
		]);
		if (v !== view) return;
		const sample = metricsText === null ? null : sampleOf(parseMetrics(metricsText));
		const rt = sample ? rates(sample, prev) : null;
		prev = sample;

		const appends = h('section', { class: 'panel', 'aria-labelledby': 'h-appends' }, h('h2', { id: 'h-appends' }, 'Appends'));
		if (rt) {
			appends.append(
				h('dl', { class: 'stats' },
					h('div', {}, h('dt', {}, 'Events appended / s'), h('dd', { id: 'events-rate' }, rt.eventsPerS.toFixed(2))),
					h('div', {}, h('dt', {}, 'Appends / s'), h('dd', {}, rt.appendsPerS.toFixed(2))),
					h('div', {}, h('dt', {}, 'Request latency, mean'), h('dd', {}, ms(rt.meanMs))),
					h('div', {}, h('dt', {}, 'Request latency, p95'), h('dd', {}, le(rt.p95)))),
				h('p', { class: 'note' }, `Over ${rt.window}, from /metrics (every route but the live feed); ${num(sample.events)} events appended by this process in all. Refreshes every 5 s.`));
		} else {
			appends.append(empty('This factd keeps no metrics.'));
		}

		const projRows = projections.projections.map((p) => h('tr', {},
			h('td', {}, link('#/projections', p.name)), h('td', {}, badge(p.status)),
			h('td', { class: 'num' }, num(p.lag_events)), h('td', { class: 'num' }, `${p.lag_seconds.toFixed(1)} s`)));
		const proj = h('section', { class: 'panel', 'aria-labelledby': 'h-proj' }, h('h2', { id: 'h-proj' }, 'Projections'),
			projRows.length ? table(['Name', 'Status', 'Lag (events)', 'Lag (time)'], projRows) : empty('This app has no projections.'));

		const counts = new Map();
		for (const m of sample?.sagas || []) counts.set(`${m.labels.type}|${m.labels.status}`, m.value);
		const sagaRows = (app.sagas || []).map((s) => h('tr', {}, h('td', {}, link(hashFor('/sagas', { type: s.name }), s.name)),
			...['running', 'compensating', 'failed'].map((st) => h('td', { class: 'num' }, link(hashFor('/sagas', { type: s.name, status: st }), num(counts.get(`${s.name}|${st}`) ?? 0))))));
		const now = Date.now();
		const overdue = running.items.filter((s) => s.due_at && Date.parse(s.due_at) < now - 1000);
		const attention = [...failed.items, ...compensating.items, ...overdue];
		const sagas = h('section', { class: 'panel', 'aria-labelledby': 'h-sagas' }, h('h2', { id: 'h-sagas' }, 'Sagas'),
			sagaRows.length ? table(['Type', 'Running', 'Compensating', 'Failed'], sagaRows) : empty('This app has no sagas.'),
			sample ? h('p', { class: 'note' }, `Overdue (a step or timer due for over a second): ${num(sample.overdue)}. Completed and compensated sagas: `, link(hashFor('/sagas', { status: 'completed' }), 'completed'), ', ', link(hashFor('/sagas', { status: 'compensated' }), 'compensated'), '.') : null);

		const attn = h('section', { class: 'panel', 'aria-labelledby': 'h-attn' }, h('h2', { id: 'h-attn' }, 'Sagas that need attention'),
			attention.length
				? table(['Saga', 'Type', 'Status', 'Step', 'Why'], attention.map((s) => h('tr', {},
					h('td', {}, link(`#/sagas/${s.id}`, s.id.slice(0, 8), { class: 'mono', title: s.id })), h('td', {}, s.type),
					h('td', {}, badge(s.status), overdue.includes(s) ? ' overdue' : ''), h('td', {}, s.current_step || '—'),
					h('td', {}, s.error || (overdue.includes(s) ? `due ${when(s.due_at)}` : '')))))
				: empty('None: no saga is failed, compensating or overdue.'));

		show(h('h1', {}, 'Overview'), h('div', { class: 'grid' }, appends, proj), h('div', { class: 'grid' }, sagas, attn));
		later(v, 5000, () => tick().catch((e) => e.name !== 'AbortError' && v === view && show(errorState(e, route))));
	};
	await tick();
}

// ---- #/streams ------------------------------------------------------------------------------

async function streamsList(r, v) {
	const q = { category: r.query.get('category') || '', prefix: r.query.get('prefix') || '', after: r.query.get('after') || '' };
	const catsAfter = r.query.get('categories_after') || '';
	show(h('h1', {}, 'Streams'), loading('categories and streams'));
	const signal = v.abort.signal;
	const params = new URLSearchParams({ limit: '50' });
	for (const [k, val] of Object.entries(q)) if (val) params.set(k, val);
	const [cats, page] = await Promise.all([
		api(`/categories?limit=100${catsAfter ? `&after=${enc(catsAfter)}` : ''}`, { signal }),
		api(`/streams?${params}`, { signal }),
	]);
	if (v !== view) return;

	const catTable = cats.categories.length
		? table(['Category', 'Streams', 'Events'], cats.categories.map((c) => h('tr', {},
			h('td', {}, link(hashFor('/streams', { category: c.category }), c.category)),
			h('td', { class: 'num' }, num(c.streams)), h('td', { class: 'num' }, num(c.events)))))
		: empty('The store holds no streams yet.');
	const catPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-cats' }, h('h2', { id: 'h-cats' }, 'Categories'), catTable,
		cats.next ? h('p', {}, link(hashFor('/streams', { ...q, categories_after: cats.next }), 'More categories →')) : null);

	const catSelect = h('select', { id: 'f-category', name: 'category' }, h('option', { value: '' }, 'all'),
		cats.categories.map((c) => h('option', { value: c.category, selected: c.category === q.category }, c.category)));
	if (q.category && !cats.categories.some((c) => c.category === q.category)) catSelect.append(h('option', { value: q.category, selected: true }, q.category));
	const prefix = h('input', { id: 'f-prefix', name: 'prefix', value: q.prefix, placeholder: 'e.g. order-01', autocomplete: 'off' });
	const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter streams' },
		h('label', { for: 'f-category' }, 'Category', catSelect),
		h('label', { for: 'f-prefix' }, 'Name starts with', prefix),
		h('button', { type: 'submit', class: 'primary' }, 'Filter'));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		location.hash = hashFor('/streams', { category: catSelect.value, prefix: prefix.value.trim() });
	});

	const rows = page.streams.map((s) => h('tr', {},
		h('td', {}, link(`#/streams/${enc(s.stream)}`, s.stream, { class: 'mono' })), h('td', {}, s.category),
		h('td', { class: 'num' }, num(s.version)), h('td', {}, when(s.updated_at))));
	const pager = h('div', { class: 'pager' },
		q.after ? link(hashFor('/streams', { category: q.category, prefix: q.prefix }), '← First page') : null,
		page.next ? link(hashFor('/streams', { ...q, after: page.next }), 'Next page →', { rel: 'next' }) : null,
		h('span', { class: 'note' }, q.after ? `Streams after ${q.after}` : 'From the first stream', ', in name order, 50 a page.'));
	const streamsPanel = h('section', { class: 'panel', 'aria-labelledby': 'h-streams' }, h('h2', { id: 'h-streams' }, 'Streams'), form,
		rows.length ? table(['Stream', 'Category', 'Version', 'Updated'], rows) : empty(q.category || q.prefix || q.after ? 'No streams match these filters.' : 'No streams yet.'),
		pager);
	show(h('h1', {}, 'Streams'), catPanel, streamsPanel);
}

const PAGE = 20;

function idLink(label, id) {
	return id ? h('span', {}, `${label}: `, link(`#/trace/${enc(id)}`, id, { class: 'mono' })) : null;
}

function eventCard(e, chosen) {
	const m = e.metadata || {};
	return h('article', { class: `event${chosen ? ' chosen' : ''}`, id: `event-${e.version}`, 'aria-label': `Event ${e.version}: ${e.type}` },
		h('header', {},
			h('span', { class: 'mono' }, `v${e.version}`), h('span', { class: 'type' }, e.type), h('time', { datetime: e.recorded_at }, when(e.recorded_at)),
			h('span', { class: 'note mono', title: 'position in the global feed' }, e.position)),
		h('div', { class: 'meta-links' }, idLink('correlation', m.correlation_id), ' ', idLink('causation', m.causation_id)),
		h('details', { open: true }, h('summary', {}, 'Data'), json(e.data)),
		h('details', {}, h('summary', {}, 'Metadata'), json(m)));
}

async function streamView(r, stream, v) {
	const signal = v.abort.signal;
	show(h('h1', {}, stream), loading('the stream'));
	const from = Math.max(1, Number.parseInt(r.query.get('from') || '1', 10) || 1);
	const page = await api(`/streams/${enc(stream)}/events?from_version=${from}&limit=${PAGE}`, { signal });
	if (v !== view) return;
	const version = page.version;
	const agg = aggregateOf(stream);
	const nav = (f) => hashFor(`/streams/${enc(stream)}`, { from: f, v: r.query.get('v') });
	const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of events' },
		from > 1 ? link(nav(Math.max(1, from - PAGE)), '← Earlier events') : null,
		from + PAGE <= version ? link(nav(from + PAGE), 'Later events →') : null,
		from + PAGE <= version ? link(nav(Math.max(1, version - PAGE + 1)), 'Latest') : null,
		h('span', { class: 'note' }, page.events.length ? `Versions ${from}–${from + page.events.length - 1} of ${version}` : `No events from version ${from}; the stream is at ${version}`));

	const head = h('div', {},
		h('h1', {}, stream),
		h('p', { class: 'note' }, `Version ${version}. `, agg ? `The stream of an aggregate of type ${agg.type.name} (${agg.type.id_field} ${agg.id}). ` : 'Not the stream of an aggregate type of this app. ',
			link(hashFor('/streams', { category: stream.split('-')[0] }), 'Other streams of this category')));
	const events = h('section', { 'aria-labelledby': 'h-events' }, h('h2', { id: 'h-events' }, 'Events'), pager,
		page.events.length ? page.events.map((e) => eventCard(e)) : empty('No events on this page.'), pager.cloneNode(true));
	if (!agg || !agg.type.state_path) {
		show(head, events);
		return;
	}

	// The aggregate's state at a chosen version, beside the event that produced it.
	let at = Math.min(version, Math.max(1, Number.parseInt(r.query.get('v') || String(version), 10) || version));
	const slider = h('input', { id: 'version-slider', type: 'range', min: 1, max: version, value: at, step: 1, 'aria-describedby': 'version-out' });
	const out = h('output', { id: 'version-out', for: 'version-slider' }, `version ${at} of ${version}`);
	const stateBox = h('div', { id: 'state', 'aria-live': 'polite' });
	const eventBox = h('div', { id: 'state-event' });
	const saga = h('p', { class: 'note' });
	const panel = h('section', { class: 'panel', 'aria-labelledby': 'h-state' },
		h('h2', { id: 'h-state' }, `State of the ${agg.type.name}`),
		h('div', { class: 'slider' }, h('label', { for: 'version-slider' }, 'Version'), slider, out), saga,
		h('div', { class: 'split' }, h('div', {}, h('h3', {}, 'State'), stateBox), h('div', {}, h('h3', {}, 'The event that produced it'), eventBox)));
	let seq = 0;
	const load = async () => {
		const mine = ++seq;
		out.textContent = `version ${at} of ${version}`;
		stateBox.replaceChildren(loading(`the state at version ${at}`));
		eventBox.replaceChildren(loading(`event ${at}`));
		try {
			const [state, ev] = await Promise.all([
				api(`${fill(agg.type.state_path, agg.id)}?version=${at}`, { signal }),
				api(`/streams/${enc(stream)}/events?from_version=${at}&limit=1`, { signal }),
			]);
			if (mine !== seq || v !== view) return;
			stateBox.replaceChildren(json(state));
			eventBox.replaceChildren(ev.events[0] ? eventCard(ev.events[0], true) : empty('No event at this version.'));
		} catch (err) {
			if (mine !== seq || v !== view) return;
			stateBox.replaceChildren(err.status === 404 ? empty(`The ${agg.type.name} did not exist yet at version ${at} (its stream may begin with events it does not know).`) : errorState(err, load));
			eventBox.replaceChildren();
		}
	};
	let debounce;
	slider.addEventListener('input', () => {
		at = Number(slider.value);
		out.textContent = `version ${at} of ${version}`;
		clearTimeout(debounce);
		debounce = setTimeout(() => {
			history.replaceState(null, '', hashFor(`/streams/${enc(stream)}`, { from: r.query.get('from'), v: at }));
			load();
		}, 150);
	});
	show(head, panel, events);
	if (agg.type.saga_path) {
		api(fill(agg.type.saga_path, agg.id), { signal }).then((s) => {
			if (v === view) saga.replaceChildren('Its saga: ', link(`#/sagas/${s.id}`, `${s.type} (${s.status})`));
		}, () => {});
	}
	await load();
}

// ---- #/live ----------------------------------------------------------------------------------

/** Read Server-Sent Events from a fetch body: onEvent({id, event, data}) per frame. */
async function readSse(res, onEvent, signal) {
	const reader = res.body.getReader();
	const dec = new TextDecoder();
	let buf = '';
	for (;;) {
		const { value, done } = await reader.read();
		if (done || signal.aborted) return;
		buf += dec.decode(value, { stream: true });
		let i;
		while ((i = buf.indexOf('\n\n')) >= 0) {
			const frame = buf.slice(0, i);
			buf = buf.slice(i + 2);
			const f = { data: '' };
			for (const line of frame.split('\n')) {
				if (line.startsWith(':')) continue;
				const c = line.indexOf(':');
				const k = c < 0 ? line : line.slice(0, c);
				const val = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
				if (k === 'data') f.data += (f.data ? '\n' : '') + val;
				else f[k] = val;
			}
			if (f.id && f.data) onEvent(f);
		}
	}
}

async function liveView(r, v) {
	const category = r.query.get('category') || '';
	const types = r.query.get('types') || '';
	const MAX = 200;
	const status = h('span', { id: 'live-status', role: 'status' }, 'connecting…');
	const count = h('span', { class: 'note' });
	const list = h('ol', { class: 'live-list', id: 'live-list', 'aria-label': 'Events, newest first', reversed: true });
	const cat = h('input', { id: 'l-category', name: 'category', value: category, placeholder: 'all', autocomplete: 'off' });
	const typ = h('input', { id: 'l-types', name: 'types', value: types, placeholder: 'e.g. OrderPlaced,OrderCancelled', autocomplete: 'off' });
	const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the live feed' },
		h('label', { for: 'l-category' }, 'Category', cat), h('label', { for: 'l-types' }, 'Event types (comma-separated)', typ),
		h('button', { type: 'submit', class: 'primary' }, 'Apply'));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		location.hash = hashFor('/live', { category: cat.value.trim(), types: typ.value.trim() });
	});
	const pause = h('button', { type: 'button', id: 'live-pause', 'aria-pressed': 'false' }, 'Pause');
	const emptyNote = empty('Waiting for new events… (the tail starts at the newest event the feed shows now)');
	show(h('h1', {}, 'Live feed'), form, h('div', { class: 'status-line' }, pause, status, count), emptyNote, list);

	let lastId = (await api('/events/head', { signal: v.abort.signal })).head;
	let seen = 0;
	let paused = false;
	let conn = null; // AbortController of the open stream
	const start = async () => {
		if (paused || v !== view) return;
		conn = new AbortController();
		const stop = () => conn.abort();
		v.abort.signal.addEventListener('abort', stop, { once: true });
		const q = new URLSearchParams({ after: lastId });
		if (category) q.set('category', category);
		if (types) q.set('types', types);
		const headers = { Accept: 'text/event-stream', 'Last-Event-ID': lastId };
		if (key) headers.Authorization = `Bearer ${key}`;
		try {
			const res = await fetch(`/events/stream?${q}`, { headers, signal: conn.signal, cache: 'no-store' });
			if (!res.ok) {
				const p = await res.json().catch(() => null);
				throw new ApiError(res.status, p);
			}
			status.textContent = `live, after ${lastId}`;
			await readSse(res, (f) => {
				lastId = f.id;
				seen++;
				emptyNote.remove();
				let e;
				try {
					e = JSON.parse(f.data);
				} catch {
					e = { type: f.event, data: f.data };
				}
				list.prepend(h('li', {},
					h('span', { class: 'mono' }, f.id), h('time', {}, when(e.recorded_at).slice(11)),
					link(`#/streams/${enc(e.stream)}`, `${e.stream} v${e.version}`, { class: 'mono' }), h('strong', {}, e.type),
					h('span', { class: 'data', title: JSON.stringify(e.data) }, JSON.stringify(e.data))));
				while (list.children.length > MAX) list.lastChild.remove();
				count.textContent = `${seen} event${seen === 1 ? '' : 's'} since this page opened${seen > MAX ? ` (the newest ${MAX} shown)` : ''}`;
				status.textContent = `live, after ${lastId}`;
			}, conn.signal);
			if (conn.signal.aborted) return;
			throw new ApiError(0, null, 'the stream ended');
		} catch (err) {
			if (v !== view || paused) return;
			if (err instanceof ApiError && [400, 401, 403].includes(err.status)) {
				show(errorState(err, route));
				return;
			}
			// The connection dropped: resume from the last event seen, as EventSource would.
			status.textContent = `reconnecting after ${lastId}… (${err.message || 'connection lost'})`;
			later(v, 2000, start);
		} finally {
			v.abort.signal.removeEventListener('abort', stop);
		}
	};
	pause.addEventListener('click', () => {
		paused = !paused;
		pause.textContent = paused ? 'Resume' : 'Pause';
		pause.setAttribute('aria-pressed', String(paused));
		if (paused) {
			conn?.abort();
			status.textContent = `paused after ${lastId}`;
		} else {
			status.textContent = `resuming after ${lastId}…`;
			start();
		}
	});
	start();
}

// ---- #/sagas ----------------------------------------------------------------------------------

const SAGA_STATUSES = ['running', 'completed', 'compensating', 'compensated', 'failed'];

async function sagasList(r, v) {
	const q = { type: r.query.get('type') || '', status: r.query.get('status') || '', after: r.query.get('after') || '' };
	show(h('h1', {}, 'Sagas'), loading('sagas'));
	const params = new URLSearchParams({ limit: '50' });
	for (const [k, val] of Object.entries(q)) if (val) params.set(k, val);
	const page = await api(`/sagas?${params}`, { signal: v.abort.signal });
	if (v !== view) return;
	const typeSel = h('select', { id: 's-type', name: 'type' }, h('option', { value: '' }, 'all'),
		(app.sagas || []).map((s) => h('option', { value: s.name, selected: s.name === q.type }, s.name)));
	const statusSel = h('select', { id: 's-status', name: 'status' }, h('option', { value: '' }, 'all'),
		SAGA_STATUSES.map((s) => h('option', { value: s, selected: s === q.status }, s)));
	const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter sagas' },
		h('label', { for: 's-type' }, 'Type', typeSel), h('label', { for: 's-status' }, 'Status', statusSel),
		h('button', { type: 'submit', class: 'primary' }, 'Filter'));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		location.hash = hashFor('/sagas', { type: typeSel.value, status: statusSel.value });
	});
	const rows = page.items.map((s) => h('tr', {},
		h('td', {}, link(`#/sagas/${s.id}`, s.id.slice(0, 8), { class: 'mono', title: s.id })), h('td', {}, s.type),
		h('td', { class: 'mono' }, s.correlation_key), h('td', {}, badge(s.status)), h('td', {}, s.current_step || '—'),
		h('td', { class: 'num' }, num(s.attempts)), h('td', {}, when(s.updated_at)), h('td', {}, s.error || '')));
	const pager = h('div', { class: 'pager' },
		q.after ? link(hashFor('/sagas', { type: q.type, status: q.status }), '← Newest') : null,
		page.next ? link(hashFor('/sagas', { ...q, after: page.next }), 'Older →', { rel: 'next' }) : null,
		h('span', { class: 'note' }, 'Newest first, 50 a page.'));
	show(h('h1', {}, 'Sagas'), h('section', { class: 'panel' }, form,
		rows.length ? table(['Saga', 'Type', 'Correlation key', 'Status', 'Step', 'Attempts', 'Updated', 'Error'], rows) : empty('No sagas match.'), pager));
}

function duration(msec) {
	if (msec < 1000) return `${Math.round(msec)} ms`;
	if (msec < 120000) return `${(msec / 1000).toFixed(1)} s`;
	return `${(msec / 60000).toFixed(1)} min`;
}

function timeline(s) {
	const hist = s.history || [];
	if (!hist.length) return empty('No step has run yet.');
	const now = Date.now();
	const t = (x) => (x ? Date.parse(x) : null);
	const t0 = Math.min(...hist.map((x) => t(x.started_at)));
	const t1 = Math.max(t0 + 1, ...hist.map((x) => t(x.finished_at) ?? Math.max(t(x.started_at), Math.min(now, t(x.started_at) + 1000))));
	const span = t1 - t0;
	const rows = hist.map((x) => {
		const start = t(x.started_at);
		const end = t(x.finished_at) ?? Math.max(start, Math.min(now, t1));
		const undo = x.kind === 'compensation';
		const left = ((start - t0) / span) * 100;
		const width = Math.max(((end - start) / span) * 100, 0.6);
		const label = `${x.seq}. ${x.step}`;
		const desc = `${undo ? 'compensation' : 'action'}, attempt ${x.attempt}: ${x.outcome}, ${duration(end - start)}${x.finished_at ? '' : ' so far'}`;
		return h('li', { class: `tl-row ${undo ? 'compensation' : 'action'}`, 'data-step': x.step, 'data-kind': x.kind, 'data-outcome': x.outcome },
			h('div', { class: 'tl-label' }, h('strong', {}, label), ' ', h('span', { class: 'kind' }, undo ? '↩ compensation' : 'action'),
				x.attempt > 1 ? h('span', { class: 'kind' }, ` · attempt ${x.attempt}`) : null, ' ', badge(x.outcome)),
			h('div', { class: 'tl-track', role: 'img', 'aria-label': `${label}: ${desc}` },
				h('div', { class: `tl-bar ${undo ? 'compensation' : ''} ${x.outcome}`, style: null, title: desc, 'data-left': left.toFixed(2), 'data-width': width.toFixed(2) })),
			x.error ? h('div', { class: 'tl-error' }, `Error: ${x.error}`) : null);
	});
	// Styles from the data attributes (the CSP allows no inline style attribute).
	for (const row of rows) {
		const bar = row.querySelector('.tl-bar');
		bar.style.left = `${bar.dataset.left}%`;
		bar.style.width = `${bar.dataset.width}%`;
	}
	return h('div', { class: 'timeline' },
		h('div', { class: 'legend', 'aria-hidden': 'true' }, h('span', {}, h('i', { class: 'tl-bar-legend s-ok' }), 'action'),
			h('span', {}, h('i', { class: 'tl-bar-legend s-undo' }), 'compensation (striped)')),
		h('ol', { class: 'tl-list', 'aria-label': 'Step attempts in the order they ran' }, rows),
		h('div', { class: 'tl-axis', 'aria-hidden': 'true' }, h('span', {}, when(new Date(t0).toISOString())), h('span', {}, `+${duration(span / 2)}`), h('span', {}, `+${duration(span)}`)));
}

async function sagaView(r, id, v) {
	const signal = v.abort.signal;
	show(h('h1', {}, 'Saga'), loading('the saga'));
	const result = h('div', { id: 'op-result', role: 'status', 'aria-live': 'polite' });
	const render = async () => {
		const s = await api(`/sagas/${enc(id)}`, { signal });
		if (v !== view) return;
		const type = (app.sagas || []).find((t) => t.name === s.type);
		const agg = (app.aggregates || []).find((a) => a.saga_type === s.type) || (app.aggregates || []).find((a) => (type?.categories || []).includes(a.category));
		const keyLink = agg ? link(`#/streams/${enc(`${agg.category}-${s.correlation_key}`)}`, s.correlation_key, { class: 'mono' }) : h('span', { class: 'mono' }, s.correlation_key);
		const actions = h('div', { class: 'status-line' });
		if (isAdmin()) {
			const op = async (name, verb, text) => {
				if (!(await confirmAction(`${verb} this saga?`, text, verb))) return;
				try {
					const after = await api(`/sagas/${enc(id)}/${name}`, { method: 'POST', signal });
					result.className = 'result';
					result.textContent = `${verb} accepted: the saga is now ${after.status}.`;
				} catch (err) {
					if (err.name === 'AbortError') return;
					result.className = 'result bad';
					result.textContent = `${verb} refused: ${err.message}`;
				}
				render().catch(() => {});
			};
			actions.append(
				h('button', { type: 'button', id: 'saga-retry', disabled: s.status !== 'failed', title: 'Only a failed saga can be retried',
					onclick: () => op('retry', 'Retry', 'The saga runs its failed compensation again, from where it stopped.') }, 'Retry'),
				h('button', { type: 'button', id: 'saga-abort', class: 'danger', disabled: s.status !== 'running', title: 'Only a running saga can be aborted',
					onclick: () => op('abort', 'Abort', 'The saga stops and undoes the steps it ran, newest first.') }, 'Abort'));
		}
		show(
			h('h1', {}, `${s.type} `, h('span', { class: 'mono' }, s.id)),
			h('p', {}, badge(s.status), ` Correlation key `, keyLink, ` · step ${s.current_step ?? '—'} (${s.phase}) · attempts ${s.attempts} · started ${when(s.created_at)} · updated ${when(s.updated_at)}`,
				s.due_at ? ` · next due ${when(s.due_at)}` : ''),
			s.error ? h('p', { class: 'state error', id: 'saga-error' }, h('strong', {}, 'Error'), s.error) : null,
			actions, result,
			h('section', { class: 'panel', 'aria-labelledby': 'h-tl' }, h('h2', { id: 'h-tl' }, 'Timeline'), timeline(s)),
			h('div', { class: 'split' },
				h('section', { class: 'panel', 'aria-labelledby': 'h-steps' }, h('h2', { id: 'h-steps' }, 'Steps'),
					table(['Step', 'Kind', 'Status', 'Attempts', 'Error'], s.steps.map((x) => h('tr', { class: x.compensation ? 'compensation' : null },
						h('td', {}, x.name), h('td', {}, x.compensation ? '↩ compensation' : 'action'), h('td', {}, badge(x.status)),
						h('td', { class: 'num' }, num(x.attempts)), h('td', {}, x.error || ''))))),
				h('section', { class: 'panel', 'aria-labelledby': 'h-data' }, h('h2', { id: 'h-data' }, 'Data'), json(s.data))));
		if (['running', 'compensating'].includes(s.status)) later(v, 2000, () => render().catch((e) => e.name !== 'AbortError' && v === view && show(errorState(e, route))));
	};
	await render();
}

// ---- #/projections ------------------------------------------------------------------------------

const seqOf = (cursor) => Number(String(cursor || '0').split('-')[1] || 0);

async function projectionsView(r, v) {
	show(h('h1', {}, 'Projections'), loading('projections'));
	const requested = new Map(); // name -> message while a rebuild this page asked for runs
	const result = h('div', { id: 'op-result', role: 'status', 'aria-live': 'polite' });
	const tick = async () => {
		const { projections } = await api('/projections', { signal: v.abort.signal });
		if (v !== view) return;
		const rows = projections.map((p) => {
			const rebuilding = p.status === 'rebuilding' || p.status === 'rebuild_requested';
			let progress = null;
			if (p.rebuild) {
				const at = seqOf(p.rebuild.checkpoint);
				const of = Math.max(seqOf(p.head), 1);
				progress = h('span', {}, h('progress', { max: of, value: Math.min(at, of), 'aria-label': `Rebuild of ${p.name}` }), ` ${Math.min(100, Math.floor((at / of) * 100))}% (at ${p.rebuild.checkpoint})`);
			} else if (p.status === 'rebuild_requested') {
				progress = h('span', {}, 'waiting for the process that runs it');
			} else if (requested.has(p.name)) {
				progress = h('span', { class: 's-live' }, 'rebuilt and swapped in');
				result.className = 'result';
				result.textContent = `${p.name}: rebuilt from the event log and swapped in.`;
				requested.delete(p.name);
			}
			return h('tr', { 'data-name': p.name },
				h('th', { scope: 'row' }, p.name), h('td', {}, badge(p.status)), h('td', { class: 'mono' }, p.checkpoint), h('td', { class: 'mono' }, p.head),
				h('td', { class: 'num' }, num(p.lag_events)), h('td', { class: 'num' }, `${p.lag_seconds.toFixed(1)} s`), h('td', {}, p.owner || '—'),
				h('td', {}, when(p.updated_at)), h('td', {}, progress),
				isAdmin() ? h('td', {}, h('button', { type: 'button', class: 'rebuild', disabled: rebuilding, 'aria-label': `Rebuild ${p.name}`, onclick: async () => {
					if (!(await confirmAction(`Rebuild ${p.name}?`, 'factd replays the whole event log into a new copy of this read model beside the live one, then swaps it in. The live copy keeps answering meanwhile.', 'Rebuild'))) return;
					try {
						await api(`/projections/${enc(p.name)}/rebuild`, { method: 'POST', signal: v.abort.signal });
						requested.set(p.name, true);
						result.className = 'result';
						result.textContent = `${p.name}: rebuild requested.`;
					} catch (err) {
						if (err.name === 'AbortError') return;
						result.className = 'result bad';
						result.textContent = `${p.name}: rebuild refused: ${err.message}`;
					}
					tick().catch(() => {});
				} }, 'Rebuild')) : null);
		});
		const head = ['Name', 'Status', 'Checkpoint', 'Head', 'Lag (events)', 'Lag (time)', 'Owner', 'Updated', 'Rebuild progress'];
		if (isAdmin()) head.push('Action');
		show(h('h1', {}, 'Projections'), result, h('section', { class: 'panel' }, rows.length ? table(head, rows) : empty('This app has no projections.'),
			h('p', { class: 'note' }, 'Refreshes every 2 s. A rebuild fills a copy beside the live table and swaps it in when it has caught up.')));
		later(v, requested.size ? 500 : 2000, () => tick().catch((e) => e.name !== 'AbortError' && v === view && show(errorState(e, route))));
	};
	await tick();
}

// ---- #/trace/{id}: where a correlation or causation id leads -------------------------------------

async function traceView(r, v) {
	const id = r.parts[1] || '';
	show(h('h1', {}, id), loading('what this id names'));
	if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
		try {
			const s = await api(`/sagas/${enc(id)}`, { signal: v.abort.signal });
			if (v === view) location.replace(`#/sagas/${s.id}`);
			return;
		} catch (err) {
			if (err.status !== 404) throw err;
		}
	}
	if (v !== view) return;
	show(h('h1', {}, h('span', { class: 'mono' }, id)),
		h('p', { class: 'state' }, 'No saga has this id, so it names a request: commands and appends record the request id of the HTTP request that made them (or the X-Correlation-Id / X-Causation-Id the client sent). factd\'s request log has one line per request with this request_id.'),
		link('#/live', 'Watch the live feed'));
}

// ---- start ----------------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
renderWho();
route();
