#!/usr/bin/env node
// The console test: starts factd on fresh databases, makes real data through
// the API (orders whose sagas complete, compensate, wait and fail), then drives
// the operator console at /console/ in Debian's Chromium (headless, through
// playwright-core; nothing downloads a browser).  Each screen is loaded and its
// visible content asserted; Retry, Abort and Rebuild are clicked and their
// effect checked through the API; a factd with API keys shows the key prompt,
// and a read key sees no admin action.  Any console error, page error, failed
// request or HTTP error status on a screen fails the test.  One screenshot per
// screen goes to .local/console-screenshots/.
//
//   node tests/console/run.mjs [path/to/factd]
//
// factd comes from the argument, else FACTD_BIN, else build-test/factd; the
// browser from FACTD_CHROMIUM, else /usr/bin/chromium.  FACTD_TEST_ADMIN_URL
// (set by scripts/test) is a superuser URL of a PostgreSQL cluster holding the
// migrated template database factd_template.  Exits non-zero on any failure.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const factdBin = path.resolve(process.argv[2] || process.env.FACTD_BIN || path.join(root, 'build-test/factd'));
const browserBin = process.env.FACTD_CHROMIUM || '/usr/bin/chromium';
const adminUrl = process.env.FACTD_TEST_ADMIN_URL;
const shots = path.join(root, '.local/console-screenshots');
const KEYS = { read: 'console-read-key-00001', admin: 'console-admin-key-0001' };

const failures = [];
let step = '';
const timings = [];
function fail(message) {
	failures.push(`${step}: ${message}`);
	console.error(`FAIL ${step}: ${message}`);
}
function check(ok, message) {
	if (!ok) fail(message);
	return ok;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- factd and PostgreSQL --------------------------------------------------------

function psql(sql) {
	return execFileSync('psql', [adminUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function dbUrl(name) {
	const u = new URL(adminUrl);
	u.pathname = `/${name}`;
	return u.toString();
}
async function createDatabase(name) {
	for (let attempt = 1; ; attempt++) {
		try {
			psql(`CREATE DATABASE "${name}" TEMPLATE factd_template`);
			return dbUrl(name);
		} catch (e) {
			if (attempt >= 20 || !/being accessed by other users/.test(String(e.stderr))) throw new Error(`cannot create database ${name}: ${e.stderr || e.message}`);
			await sleep(250);
		}
	}
}

const instances = [];
function startFactd(name, env) {
	const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FACTD_')));
	const child = spawn(factdBin, ['serve'], { env: { ...inherited, FACTD_LISTEN: '127.0.0.1:0', FACTD_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
	const inst = { name, child, log: [] };
	instances.push(inst);
	inst.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`factd (${name}) did not listen within 30 s`)), 30000);
		let buf = '';
		child.stderr.on('data', (d) => {
			buf += d;
			let i;
			while ((i = buf.indexOf('\n')) >= 0) {
				const line = buf.slice(0, i);
				buf = buf.slice(i + 1);
				inst.log.push(line);
				try {
					const rec = JSON.parse(line);
					if (!inst.base && rec.msg === 'listening' && rec.port) {
						inst.base = `http://127.0.0.1:${rec.port}`;
						clearTimeout(timer);
						resolve(inst);
					}
				} catch {
					// not a JSON log line
				}
			}
		});
		child.on('error', (e) => reject(new Error(`cannot start ${factdBin}: ${e.message}`)));
		inst.exited.then(({ code }) => inst.base || reject(new Error(`factd (${name}) exited with ${code} before listening`)));
	});
}
async function stopFactd(inst) {
	inst.child.kill('SIGTERM');
	const r = await Promise.race([inst.exited, sleep(20000).then(() => null)]);
	if (!r) {
		inst.child.kill('SIGKILL');
		fail(`factd (${inst.name}) did not stop within 20 s`);
	} else if (r.code !== 0) {
		fail(`factd (${inst.name}) exited with ${r.code} (${r.signal})`);
	}
}

/** A JSON request to factd; throws unless the status is `want`. */
async function api(inst, method, p, { json, headers = {}, want } = {}) {
	const res = await fetch(inst.base + p, {
		method,
		headers: { ...(json ? { 'Content-Type': 'application/json' } : {}), ...headers },
		body: json ? JSON.stringify(json) : undefined,
	});
	const text = await res.text();
	const body = text ? JSON.parse(text) : null;
	if (want && ![].concat(want).includes(res.status)) throw new Error(`${method} ${p}: ${res.status} ${text.slice(0, 300)}`);
	return { status: res.status, body };
}
async function until(what, fn, ms = 60000) {
	const deadline = Date.now() + ms;
	for (;;) {
		const v = await fn();
		if (v) return v;
		if (Date.now() > deadline) throw new Error(`not ${what} within ${ms / 1000} s`);
		await sleep(150);
	}
}

// ---- the data ------------------------------------------------------------------------

/** Orders whose sagas compensate (out of stock), wait at take_payment (for Abort) and fail (for Retry). */
async function makeData(f) {
	const sku = 'SKU-CONSOLE', scarce = 'SKU-SCARCE';
	await api(f, 'POST', '/products', { json: { product_id: sku, name: 'Console widget', stock: 100 }, want: 201 });
	await api(f, 'POST', '/products', { json: { product_id: scarce, name: 'Scarce widget', stock: 1 }, want: 201 });
	const place = async (product, quantity, customer) => {
		const id = (await api(f, 'POST', '/orders', { json: { customer_id: customer }, want: 201 })).body.order_id;
		await api(f, 'POST', `/orders/${id}/lines`, { json: { product_id: product, quantity, unit_price_cents: 1250 }, want: 200 });
		await api(f, 'POST', `/orders/${id}/place`, { want: 200 });
		return id;
	};
	const saga = (order, ok, what) => until(what, async () => {
		const r = await api(f, 'GET', `/orders/${order}/saga`, { want: [200, 404] });
		return r.status === 200 && ok(r.body) ? r.body : null;
	});
	const waiting = (s) => s.status === 'running' && s.phase === 'waiting' && s.current_step === 'take_payment';

	const running = await place(sku, 2, 'c-running');
	const runningSaga = await saga(running, waiting, 'waiting for the payment');
	const scarceOrder = await place(scarce, 3, 'c-scarce');
	const compensated = await saga(scarceOrder, (s) => s.status === 'compensated', 'compensated');
	// A compensation that cannot complete: the order is confirmed behind the saga's back and shipped.
	const stuck = await place(sku, 1, 'c-failed');
	const stuckSaga = await saga(stuck, waiting, 'waiting for the payment');
	await api(f, 'POST', `/streams/order-${stuck}/events`, { json: { expected_version: 'any', events: [{ type: 'OrderConfirmed', data: {} }] }, want: 201 });
	await api(f, 'POST', `/orders/${stuck}/ship`, { want: 200 });
	await api(f, 'POST', `/sagas/${stuckSaga.id}/abort`, { want: 202 });
	const failed = await saga(stuck, (s) => s.status === 'failed', 'failed');
	// 60 plain streams to page over.
	for (let i = 0; i < 60; i++)
		await api(f, 'POST', `/streams/load-${String(i).padStart(3, '0')}/events`, { json: { expected_version: 0, events: [{ type: 'Loaded', data: { i } }] }, want: 201 });
	return { running, runningSaga, compensated, failed, stuck };
}

// ---- the browser -----------------------------------------------------------------------------

/** A page whose errors and failed requests are recorded against the current step. */
async function watchedPage(browser, viewport) {
	const context = await browser.newContext({ viewport });
	const page = await context.newPage();
	page.expected = []; // predicates of requests a step expects to fail
	const expected = (url, why) => page.expected.some((f) => f(url, why));
	page.on('console', (m) => {
		if (m.type() === 'error' && !expected(m.location()?.url || '', m.text())) fail(`browser console error: ${m.text()}`);
	});
	page.on('pageerror', (e) => fail(`page error: ${e.message}`));
	page.on('requestfailed', (r) => {
		const why = r.failure()?.errorText || '';
		// Leaving a screen aborts its live stream and pending reads on purpose.
		if (why === 'net::ERR_ABORTED') return;
		if (!expected(r.url(), why)) fail(`request failed: ${r.method()} ${r.url()}: ${why}`);
	});
	page.on('response', (r) => {
		if (r.status() >= 400 && !expected(r.url(), String(r.status()))) fail(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
	});
	return { context, page };
}

async function screen(name, fn) {
	step = name;
	const t0 = Date.now();
	try {
		await fn();
	} catch (e) {
		fail(e.stack || String(e));
	}
	timings.push([name, Date.now() - t0]);
}

async function shot(page, name) {
	await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
}

/** Controls are labelled and reachable: every input and select has a label, every button a name. */
async function checkControls(page) {
	const bad = await page.evaluate(() => {
		const out = [];
		for (const el of document.querySelectorAll('input, select')) if (!el.labels?.length && !el.getAttribute('aria-label')) out.push(`${el.tagName} ${el.name || el.id}`);
		for (const el of document.querySelectorAll('button, a[href]')) {
			if (!(el.textContent.trim() || el.getAttribute('aria-label'))) out.push(`${el.tagName} without a name`);
			if (el.tabIndex < 0) out.push(`${el.tagName} ${el.textContent.trim()} not reachable by keyboard`);
		}
		return out;
	});
	check(!bad.length, `unlabelled or unreachable controls: ${bad.join(', ')}`);
}

const texts = (page, sel) => page.locator(sel).allTextContents();

async function main() {
	if (!adminUrl) throw new Error('FACTD_TEST_ADMIN_URL is not set (scripts/test sets it)');
	if (!existsSync(browserBin)) throw new Error(`no browser at ${browserBin}: install Debian's chromium (scripts/setup does) or set FACTD_CHROMIUM`);
	mkdirSync(shots, { recursive: true });
	const started = Date.now();
	const db = `console_${process.pid}_${Date.now().toString(36)}`;
	let browser;
	try {
		step = 'start';
		const url = await createDatabase(db);
		// The gateway never answers, so a placed order's saga waits at take_payment
		// (its timeout made long) until it is aborted.
		const f = await startFactd('console', { FACTD_DATABASE_URL: url, FACTD_PAYMENT_NEVER_ANSWER: '1', FACTD_SAGA_TIME_PERCENT: '1000' });
		const keyed = await startFactd('keys', {
			FACTD_DATABASE_URL: url, FACTD_SAGAS: '0', FACTD_PROJECTIONS: '0', FACTD_API_KEYS: `read:${KEYS.read},admin:${KEYS.admin}`,
		});
		step = 'data';
		const t0 = Date.now();
		const d = await makeData(f);
		timings.push(['data through the API', Date.now() - t0]);

		const t1 = Date.now();
		browser = await chromium.launch({
			executablePath: browserBin,
			headless: true,
			args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
				'--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
		});
		timings.push(['browser start', Date.now() - t1]);
		const { context, page } = await watchedPage(browser, { width: 1280, height: 800 });
		const go = async (hash) => {
			await page.goto(`${f.base}/console/${hash}`);
		};

		await screen('overview', async () => {
			await go('#/');
			await page.getByRole('heading', { name: 'Appends' }).waitFor();
			check(await page.locator('nav a[aria-current=page]').textContent() === 'Overview', 'the nav does not mark Overview');
			check(Number(await page.locator('#events-rate').textContent()) >= 0, 'no append rate');
			const proj = await texts(page, 'section[aria-labelledby=h-proj] td');
			check(proj.includes('order_summaries') && proj.includes('product_stock'), `projections: ${proj}`);
			const sagaTypes = await texts(page, 'section[aria-labelledby=h-sagas] td');
			check(sagaTypes.includes('order_fulfillment'), `saga types: ${sagaTypes}`);
			const attention = page.locator('section[aria-labelledby=h-attn]');
			await attention.locator(`a[href="#/sagas/${d.failed.id}"]`).waitFor();
			check((await attention.textContent()).includes('failed'), 'the failed saga is not marked failed');
			await checkControls(page);
			await shot(page, 'overview');
		});

		await screen('streams', async () => {
			await go('#/streams');
			await page.getByRole('heading', { name: 'Categories' }).waitFor();
			const cats = await texts(page, 'section[aria-labelledby=h-cats] tbody tr td:first-child');
			check(['load', 'order', 'payment', 'product'].every((c) => cats.includes(c)), `categories: ${cats}`);
			const loadRow = await page.locator('section[aria-labelledby=h-cats] tbody tr', { hasText: 'load' }).allTextContents();
			check(loadRow.some((t) => /load\s*60\s*60/.test(t)), `load: ${loadRow}`);
			await page.getByLabel('Name starts with').fill('load-0');
			await page.getByRole('button', { name: 'Filter' }).click();
			await page.waitForURL(/prefix=load-0/);
			await page.locator('section[aria-labelledby=h-streams] tbody tr').first().waitFor();
			let names = await texts(page, 'section[aria-labelledby=h-streams] tbody td:first-child');
			check(names.length === 50 && names[0] === 'load-000' && names[49] === 'load-049', `first page: ${names.length} rows, ${names[0]}..${names.at(-1)}`);
			await shot(page, 'streams');
			await page.getByRole('link', { name: 'Next page →' }).click();
			await page.waitForURL(/after=load-049/);
			await page.locator('section[aria-labelledby=h-streams] tbody td', { hasText: 'load-050' }).waitFor();
			names = await texts(page, 'section[aria-labelledby=h-streams] tbody td:first-child');
			check(names.length === 10 && names[0] === 'load-050', `second page: ${names}`);
			await page.goBack();
			await page.locator('section[aria-labelledby=h-streams] tbody td', { hasText: 'load-000' }).waitFor();
			check(!/after=/.test(page.url()), `back did not return to the first page: ${page.url()}`);
			await page.getByLabel('Category').selectOption('product');
			await page.getByLabel('Name starts with').fill('');
			await page.getByRole('button', { name: 'Filter' }).click();
			await page.waitForURL(/category=product/);
			await page.locator('section[aria-labelledby=h-streams] tbody td', { hasText: 'product-SKU-CONSOLE' }).waitFor();
			names = await texts(page, 'section[aria-labelledby=h-streams] tbody td:first-child');
			check(names.every((n) => n.startsWith('product-')), `category filter: ${names}`);
			await checkControls(page);
		});

		await screen('stream', async () => {
			await go(`#/streams/order-${d.running}`);
			await page.locator('article.event').first().waitFor();
			const types = await texts(page, 'section[aria-labelledby=h-events] article.event .type');
			check(types.slice(0, 3).join() === 'OrderCreated,OrderLineAdded,OrderPlaced', `event types: ${types}`);
			check(await page.locator(`section[aria-labelledby=h-events] a[href^="#/trace/"]`).count() >= 3, 'correlation ids are not links');
			// The state at version 2: a draft with its one line, beside the event that made it.
			const slider = page.getByRole('slider', { name: 'Version' });
			await slider.focus();
			await page.keyboard.press('Home');
			await page.keyboard.press('ArrowRight');
			await page.waitForURL(/v=2/);
			await page.locator('#state-event .type', { hasText: 'OrderLineAdded' }).waitFor();
			const state = JSON.parse(await page.locator('#state pre').textContent());
			check(state.status === 'draft' && state.lines.length === 1 && state.version === 2, `state at version 2: ${JSON.stringify(state)}`);
			check((await page.locator('#version-out').textContent()).includes('version 2 of'), 'the slider does not say its version');
			await page.locator('p.note a', { hasText: 'order_fulfillment' }).waitFor();
			await shot(page, 'stream');
			// A bookmark of that version opens at it.
			await page.reload();
			await page.locator('#state-event .type', { hasText: 'OrderLineAdded' }).waitFor();
			check((await page.getByRole('slider', { name: 'Version' }).inputValue()) === '2', 'a reload lost the chosen version');
			// A correlation id of a saga's command leads to the saga.
			await go(`#/trace/${d.runningSaga.id}`);
			await page.waitForURL(new RegExp(`#/sagas/${d.runningSaga.id}`));
			await checkControls(page);
		});

		await screen('live', async () => {
			await go('#/live?category=live');
			await page.locator('#live-status', { hasText: 'live, after' }).waitFor();
			await api(f, 'POST', '/streams/live-1/events', { json: { expected_version: 'any', events: [{ type: 'Tick', data: { n: 1 } }, { type: 'Tock', data: { n: 2 } }] }, want: 201 });
			await page.locator('#live-list li', { hasText: 'Tock' }).waitFor({ timeout: 15000 });
			let rows = await texts(page, '#live-list li strong');
			check(rows.join() === 'Tock,Tick', `newest first: ${rows}`);
			await api(f, 'POST', '/streams/other-1/events', { json: { expected_version: 'any', events: [{ type: 'Elsewhere', data: {} }] }, want: 201 });
			await page.getByRole('button', { name: 'Pause' }).click();
			await page.locator('#live-status', { hasText: 'paused' }).waitFor();
			await api(f, 'POST', '/streams/live-1/events', { json: { expected_version: 'any', events: [{ type: 'WhilePaused', data: {} }] }, want: 201 });
			await sleep(1200);
			check(!(await page.locator('#live-list').textContent()).includes('WhilePaused'), 'an event arrived while paused');
			await page.getByRole('button', { name: 'Resume' }).click();
			await page.locator('#live-list li', { hasText: 'WhilePaused' }).waitFor({ timeout: 15000 });
			rows = await texts(page, '#live-list li strong');
			check(rows.join() === 'WhilePaused,Tock,Tick', `after resuming from the last id: ${rows}`);
			// The type filter, through the form.
			await page.getByLabel('Event types (comma-separated)').fill('Tick');
			await page.getByRole('button', { name: 'Apply' }).click();
			await page.waitForURL(/types=Tick/);
			await page.locator('#live-status', { hasText: 'live, after' }).waitFor();
			await api(f, 'POST', '/streams/live-1/events', { json: { expected_version: 'any', events: [{ type: 'Tock', data: {} }, { type: 'Tick', data: { n: 3 } }] }, want: 201 });
			await page.locator('#live-list li', { hasText: 'Tick' }).waitFor({ timeout: 15000 });
			await sleep(300);
			rows = await texts(page, '#live-list li strong');
			check(rows.join() === 'Tick', `with types=Tick: ${rows}`);
			await checkControls(page);
			await shot(page, 'live');
		});

		await screen('sagas', async () => {
			await go('#/sagas');
			await page.locator('tbody tr').first().waitFor();
			await page.getByLabel('Status').selectOption('compensated');
			await page.getByRole('button', { name: 'Filter' }).click();
			await page.waitForURL(/status=compensated/);
			await page.locator(`a[href="#/sagas/${d.compensated.id}"]`).waitFor();
			const statuses = await texts(page, 'tbody td:nth-child(4)');
			check(statuses.length >= 1 && statuses.every((s) => s === 'compensated'), `statuses: ${statuses}`);
			await checkControls(page);
			await shot(page, 'sagas');
		});

		await screen('saga timeline', async () => {
			await go(`#/sagas/${d.compensated.id}`);
			await page.locator('.tl-row').first().waitFor();
			const rows = await page.locator('.tl-row').evaluateAll((els) => els.map((e) => `${e.dataset.step}:${e.dataset.kind}:${e.dataset.outcome}`));
			check(rows.join() === 'accept_order:action:succeeded,reserve_inventory:action:failed,reserve_inventory:compensation:succeeded,accept_order:compensation:succeeded',
				`timeline: ${rows}`);
			const undo = await page.locator('.tl-row.compensation').count();
			check(undo === 2, `${undo} rows marked as compensations`);
			check((await page.locator('.tl-row.compensation .tl-bar.compensation').count()) === 2, 'compensation bars are not marked');
			check((await page.locator('.tl-row.compensation').first().textContent()).includes('compensation'), 'compensations are not labelled');
			check((await page.locator('.tl-error').first().textContent()).includes('insufficient-stock'), 'the failed step shows no error');
			check((await page.locator('section[aria-labelledby=h-data] pre').textContent()).includes('"order_id"'), 'no saga data');
			await shot(page, 'saga');
		});

		await screen('abort', async () => {
			await go(`#/sagas/${d.runningSaga.id}`);
			const abort = page.getByRole('button', { name: 'Abort' });
			await abort.waitFor();
			check(await page.getByRole('button', { name: 'Retry' }).isDisabled(), 'Retry is enabled on a running saga');
			await abort.click();
			const dialog = page.getByRole('dialog');
			await dialog.waitFor();
			check((await dialog.textContent()).includes('Abort this saga?'), 'no confirmation');
			await dialog.getByRole('button', { name: 'Abort' }).click();
			await page.locator('#op-result', { hasText: 'Abort accepted' }).waitFor();
			const s = await until('compensated', async () => {
				const r = await api(f, 'GET', `/sagas/${d.runningSaga.id}`, { want: 200 });
				return r.body.status === 'compensated' ? r.body : null;
			});
			check(s.error === 'aborted by an operator', `error ${s.error}`);
			await page.locator('.badge', { hasText: 'compensated' }).first().waitFor({ timeout: 10000 });
		});

		await screen('retry', async () => {
			const before = (await api(f, 'GET', `/sagas/${d.failed.id}`, { want: 200 })).body.history.length;
			await go(`#/sagas/${d.failed.id}`);
			const retry = page.getByRole('button', { name: 'Retry' });
			await retry.waitFor();
			// Cancelling the confirmation does nothing.
			await retry.click();
			await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
			check(!(await page.locator('#op-result').textContent()), 'cancelled, yet a result shows');
			await retry.click();
			await page.getByRole('dialog').getByRole('button', { name: 'Retry' }).click();
			await page.locator('#op-result', { hasText: 'Retry accepted' }).waitFor();
			const s = await until('failed again', async () => {
				const r = await api(f, 'GET', `/sagas/${d.failed.id}`, { want: 200 });
				return r.body.status === 'failed' && r.body.history.length > before ? r.body : null;
			});
			check(/order-shipped/.test(s.error || ''), `error ${s.error}`);
			await page.locator('.tl-row.compensation').nth(1).waitFor({ timeout: 10000 });
		});

		await screen('projections', async () => {
			await go('#/projections');
			const row = page.locator('tr[data-name=order_summaries]');
			await row.waitFor();
			check((await row.textContent()).includes('live'), `order_summaries: ${await row.textContent()}`);
			await page.getByRole('button', { name: 'Rebuild order_summaries' }).click();
			await page.getByRole('dialog').getByRole('button', { name: 'Rebuild' }).click();
			await page.locator('#op-result', { hasText: 'rebuild requested' }).waitFor();
			await page.locator('#op-result', { hasText: 'rebuilt from the event log and swapped in' }).waitFor({ timeout: 60000 });
			const st = (await api(f, 'GET', '/projections', { want: 200 })).body.projections.find((p) => p.name === 'order_summaries');
			check(st.status === 'live' && st.rebuild === null, `after the rebuild: ${JSON.stringify(st)}`);
			await checkControls(page);
			await shot(page, 'projections');
		});

		await screen('error states', async () => {
			page.expected = [(u, why) => /\/projections$/.test(u) || why.includes('/projections') || /ERR_INTERNET_DISCONNECTED|503/.test(why)];
			await page.route('**/projections', (r) => r.abort('internetdisconnected'));
			await go('#/projections');
			await page.getByRole('alert').filter({ hasText: 'No connection' }).waitFor();
			await page.unroute('**/projections');
			await page.route('**/projections', (r) => r.fulfill({ status: 503, contentType: 'application/problem+json', headers: { 'Retry-After': '1' },
				body: JSON.stringify({ type: 'https://factd.dev/problems/database-unavailable', title: 'Database unavailable', status: 503, detail: 'the database is unreachable' }) }));
			await page.getByRole('button', { name: 'Try again' }).click();
			await page.getByRole('alert').filter({ hasText: 'factd is unavailable' }).waitFor();
			await page.unroute('**/projections');
			await page.getByRole('button', { name: 'Try again' }).click();
			await page.locator('tr[data-name=order_summaries]').waitFor();
			page.expected = [];
			// Nothing matches: an explicit empty state.
			await go('#/streams?prefix=nothing-here');
			await page.locator('.state.empty', { hasText: 'No streams match' }).waitFor();
		});

		await screen('phone width', async () => {
			await page.setViewportSize({ width: 390, height: 844 });
			for (const [hash, ready] of [[`#/sagas/${d.compensated.id}`, '.tl-row'], [`#/streams/order-${d.running}`, 'article.event'], ['#/', '#events-rate']]) {
				await go(hash);
				await page.locator(ready).first().waitFor();
				const [over, wide] = await page.evaluate(() => [document.documentElement.scrollWidth - window.innerWidth,
					[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll'))
						.slice(0, 5).map((e) => `${e.tagName.toLowerCase()}.${e.className}`)]);
				check(over <= 1, `${hash}: the page is ${over}px wider than the screen (${wide.join(', ')})`);
			}
			await go(`#/sagas/${d.compensated.id}`);
			await page.locator('.tl-row').first().waitFor();
			await shot(page, 'phone-saga');
			await page.setViewportSize({ width: 1280, height: 800 });
		});
		await context.close();

		await screen('keys', async () => {
			const { context: kc, page: kp } = await watchedPage(browser, { width: 1280, height: 800 });
			await kp.goto(`${keyed.base}/console/`);
			const input = kp.getByLabel(/^Key/);
			await input.waitFor();
			await shot(kp, 'key-prompt');
			await input.fill('not-a-key-of-this-factd');
			await kp.getByRole('button', { name: 'Use this key' }).click();
			await kp.locator('.keyform', { hasText: 'does not know this key' }).waitFor();
			// A read key: every screen, no admin action.
			await input.fill(KEYS.read);
			await kp.getByRole('button', { name: 'Use this key' }).click();
			await kp.getByRole('heading', { name: 'Appends' }).waitFor();
			check((await kp.locator('#role').textContent()) === 'read', 'the role is not shown');
			await kp.goto(`${keyed.base}/console/#/sagas/${d.failed.id}`);
			await kp.locator('.tl-row').first().waitFor();
			check((await kp.getByRole('button', { name: /Retry|Abort/ }).count()) === 0, 'a read key sees Retry or Abort');
			await kp.goto(`${keyed.base}/console/#/projections`);
			await kp.locator('tr[data-name=order_summaries]').waitFor();
			check((await kp.getByRole('button', { name: /Rebuild/ }).count()) === 0, 'a read key sees Rebuild');
			// The key stays for the tab (sessionStorage), and can be forgotten.
			await kp.reload();
			await kp.locator('tr[data-name=order_summaries]').waitFor();
			await kp.getByRole('button', { name: 'Forget key' }).click();
			await input.waitFor();
			await input.fill(KEYS.admin);
			await kp.getByRole('button', { name: 'Use this key' }).click();
			await kp.locator('tr[data-name=order_summaries]').waitFor();
			check((await kp.getByRole('button', { name: 'Rebuild order_summaries' }).count()) === 1, 'an admin key sees no Rebuild');
			await kc.close();
		});
	} finally {
		step = 'stop';
		if (browser) await browser.close();
		for (const inst of instances) await stopFactd(inst);
		try {
			psql(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
		} catch (e) {
			console.error(`console: cannot drop ${db}: ${e.stderr || e.message}`);
		}
	}
	console.log('console test timings:');
	for (const [name, ms] of timings) console.log(`  ${name.padEnd(22)} ${(ms / 1000).toFixed(2)} s`);
	console.log(`console: ${timings.length} steps in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${path.relative(root, shots)}/`);
}

try {
	await main();
} catch (e) {
	fail(e.stack || String(e));
}
if (failures.length) {
	for (const inst of instances) {
		console.error(`\n--- factd (${inst.name}) log, last 30 lines ---`);
		console.error(inst.log.slice(-30).join('\n'));
	}
	console.error(`\nconsole: ${failures.length} failure(s)`);
	process.exit(1);
}
console.log('console: every screen works in Chromium');
