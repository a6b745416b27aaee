#!/usr/bin/env node
// The shop's invariants under random command sequences: a model-based test
// against real factd processes and a real PostgreSQL.
//
//   node apps/shop/tests/invariants.mjs [path/to/factd]
//
// From a seed it generates a plan of commands for several concurrent clients:
// products are created and restocked; orders are created, get lines added and
// removed, are placed, cancelled (before, during and after their fulfillment
// saga), shipped; some go over the payment limit (FACTD_PAYMENT_LIMIT_CENTS);
// an operator aborts and retries sagas; payments are refunded by hand; a few
// commands are malformed.  Clients run their share of the plan concurrently
// against one factd process; a second process shares the database and the
// saga work and is killed (SIGKILL) and started again while the clients run.
// Then the sagas settle and the state is read back through the REST API and
// checked, for every product and order:
//   - available + reserved + committed == stocked, and stocked is the initial
//     stock plus every restock that was answered 200;
//   - reserved is the sum of the lines of the orders that hold a reservation
//     (confirmed, or placed while their saga runs), reservation by
//     reservation; committed is the sum of the lines of the shipped orders;
//     no reservation belongs to a cancelled order;
//   - a cancelled order's payment is declined (or voided) or fully refunded;
//     a confirmed or shipped order's payment is authorised, for the order's total;
//   - every order's stream has at most one end event (OrderShipped or
//     OrderCancelled) and nothing after it, at most one OrderPlaced and
//     OrderConfirmed; a product reserves and closes an order's reservation at
//     most once; a payment is authorised at most once and refunds never
//     exceed it;
//   - a cancelled order's saga is not left "completed", a confirmed or
//     shipped order's saga is completed;
//   - every answer is a documented status; every 4xx/5xx is problem+json, and
//     no answer is a 5xx.
//
// Settings (environment): FACTD_INVARIANTS_SEED (default: random; printed),
// FACTD_INVARIANTS_COMMANDS (400), FACTD_INVARIANTS_CLIENTS (4),
// FACTD_INVARIANTS_SERVERS (client-facing processes, 1), FACTD_INVARIANTS_CRASHES
// (kills of the extra process, 2; 0: no extra process), FACTD_INVARIANTS_PRODUCTS (5).
// factd comes from the argument, else FACTD_BIN, else build-test/factd.
// FACTD_TEST_ADMIN_URL (set by scripts/test) is a superuser URL of a cluster
// holding the migrated template database factd_template.  Exits 1 on any
// violation, printing the seed that replays the plan.

import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const factdBin = path.resolve(process.argv[2] || process.env.FACTD_BIN || path.join(root, 'build-test/factd'));
const adminUrl = process.env.FACTD_TEST_ADMIN_URL;
const env = (name, dflt) => {
	const v = process.env[name];
	if (v === undefined || v === '') return dflt;
	if (!/^\d+$/.test(v)) throw new Error(`${name} must be a non-negative integer, not ${JSON.stringify(v)}`);
	return Number(v);
};
const SEED = env('FACTD_INVARIANTS_SEED', Math.floor(Math.random() * 2 ** 32)) >>> 0;
const COMMANDS = env('FACTD_INVARIANTS_COMMANDS', 400);
const CLIENTS = Math.max(1, env('FACTD_INVARIANTS_CLIENTS', 4));
const SERVERS = Math.max(1, env('FACTD_INVARIANTS_SERVERS', 1));
const CRASHES = env('FACTD_INVARIANTS_CRASHES', 2);
const PRODUCTS = Math.max(1, env('FACTD_INVARIANTS_PRODUCTS', 5));
const LIMIT_CENTS = 9000; // FACTD_PAYMENT_LIMIT_CENTS of every process
const SETTLE_MS = 60000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the seeded generator -----------------------------------------------------------

function prng(seed) {
	let s = seed >>> 0; // mulberry32
	return () => {
		s = (s + 0x6d2b79f5) >>> 0;
		let t = s;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}
const rand = prng(SEED);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (arr) => arr[Math.floor(rand() * arr.length)];
const chance = (p) => rand() < p;
function uuid() {
	const h = Array.from({ length: 32 }, () => Math.floor(rand() * 16).toString(16));
	h[12] = '4';
	h[16] = ((parseInt(h[16], 16) & 3) | 8).toString(16);
	const s = h.join('');
	return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

// Products: created before the clients start; a fixed price each, so lines of
// one product always agree on it.  Amounts reach past LIMIT_CENTS now and then.
const products = Array.from({ length: PRODUCTS }, (_, i) => ({
	id: `inv-${SEED.toString(36)}-p${i}`,
	price: int(50, 2500),
	stock: int(0, 25),
}));

/*
 * The plan: each client's list of commands.  A client mostly drives orders of
 * its own through their life (a current draft that gets lines, then is
 * placed); in between it acts on any placed order of any client (cancel, ship,
 * abort, retry, refund), restocks, and sends malformed commands.  Waits
 * ("until the saga ended", "a few ms") are part of a command, so a cancel can
 * land before, during or after the saga.
 */
function makePlan() {
	const plan = Array.from({ length: CLIENTS }, () => []);
	const drafts = new Array(CLIENTS).fill(null);
	const placed = [];
	const mine = Array.from({ length: CLIENTS }, () => []);
	const orders = [];
	const waitChoice = () => pick(['none', 'none', 'delay', 'delay', 'saga_end']);
	for (let n = 0; n < COMMANDS; n++) {
		const c = int(0, CLIENTS - 1);
		const cmds = plan[c];
		const r = rand();
		if (r < 0.5 || placed.length === 0) {
			let d = drafts[c];
			if (!d) {
				d = drafts[c] = { id: uuid(), lines: new Set() };
				orders.push(d.id);
				cmds.push({ op: 'create', order: d.id });
				continue;
			}
			const q = rand();
			if (d.lines.size && q < 0.3) {
				cmds.push({ op: 'place', order: d.id });
				placed.push(d.id);
				mine[c].push(d.id);
				drafts[c] = null;
			} else if (d.lines.size && q < 0.38) {
				const p = pick([...d.lines]);
				d.lines.delete(p);
				cmds.push({ op: 'remove_line', order: d.id, product: p });
			} else if (q > 0.98) {
				cmds.push({ op: 'cancel', order: d.id, wait: 'none' }); // a draft: nothing held yet
				drafts[c] = null;
			} else {
				const p = pick(products);
				d.lines.add(p.id);
				cmds.push({ op: 'add_line', order: d.id, product: p.id, quantity: int(1, 3), price: p.price });
			}
			continue;
		}
		// mostly an order this client placed (so the command comes after its place), else any
		const own = mine[c];
		const target = own.length && chance(0.85) ? own[own.length - 1 - Math.min(own.length - 1, int(0, 2))] : pick(placed);
		const k = (r - 0.5) / 0.5; // the rest of the mix, 0..1
		if (k < 0.2) cmds.push({ op: 'cancel', order: target, wait: waitChoice(), delay: int(0, 250) });
		else if (k < 0.62) cmds.push({ op: 'ship', order: target, wait: chance(0.8) ? 'saga_end' : 'none' });
		else if (k < 0.72) cmds.push({ op: 'abort', order: target, wait: waitChoice(), delay: int(0, 150) });
		else if (k < 0.75) cmds.push({ op: 'retry', order: target });
		else if (k < 0.85) cmds.push({ op: 'refund', order: target, wait: waitChoice(), delay: int(0, 200), part: chance(0.4) });
		else if (k < 0.95) cmds.push({ op: 'restock', product: pick(products).id, quantity: int(1, 6) });
		else cmds.push({ op: 'bad', kind: int(0, 4), order: target, product: pick(products).id });
	}
	return { plan, orders };
}

// ---- PostgreSQL and factd -----------------------------------------------------------

function psql(sql) {
	return execFileSync('psql', [adminUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function dbUrl(name) {
	const u = new URL(adminUrl);
	u.pathname = '/' + name;
	return u.toString();
}

async function createDatabase(name) {
	for (let attempt = 1; ; attempt++) {
		try {
			psql(`CREATE DATABASE "${name}" TEMPLATE "factd_template"`);
			return dbUrl(name);
		} catch (e) {
			// CREATE DATABASE ... TEMPLATE fails while another session uses the template.
			if (attempt >= 40 || !/being accessed by other users/.test(String(e.stderr))) throw new Error(`cannot create database ${name}: ${e.stderr || e.message}`);
			await sleep(250);
		}
	}
}

function freePort() {
	return new Promise((resolve, reject) => {
		const srv = net.createServer();
		srv.on('error', reject);
		srv.listen(0, '127.0.0.1', () => {
			const { port } = srv.address();
			srv.close(() => resolve(port));
		});
	});
}

const instances = [];
/* Starts factd (warnings only in its log) and resolves once /readyz answers 200. */
async function startFactd(name, extra) {
	const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FACTD_')));
	const port = await freePort();
	const child = spawn(factdBin, ['serve', '--no-migrate'], {
		env: {
			...inherited,
			FACTD_LISTEN: `127.0.0.1:${port}`,
			FACTD_LOG_LEVEL: 'warn',
			FACTD_PAYMENT_LIMIT_CENTS: String(LIMIT_CENTS),
			FACTD_SAGA_TIME_PERCENT: '10',
			FACTD_SAGA_LEASE_MS: '2000',
			FACTD_SAGA_POLL_MS: '50',
			FACTD_SAGA_WORKERS: '2',
			FACTD_PAYMENT_FAIL_FIRST: '1', // every payment's first attempt fails: the saga retries, so it runs longer
			...extra,
		},
		stdio: ['ignore', 'ignore', 'pipe'],
	});
	const inst = { name, child, log: [], exited: null, killed: false, base: `http://127.0.0.1:${port}` };
	instances.push(inst);
	inst.exitedPromise = new Promise((resolve) => {
		child.on('exit', (code, signal) => resolve((inst.exited = { code, signal })));
		child.on('error', (e) => resolve((inst.exited = { code: null, signal: null, error: e.message })));
	});
	let buf = '';
	child.stderr.on('data', (d) => {
		buf += d;
		let i;
		while ((i = buf.indexOf('\n')) >= 0) {
			inst.log.push(buf.slice(0, i));
			buf = buf.slice(i + 1);
			if (inst.log.length > 400) inst.log.splice(0, 200);
		}
	});
	for (const deadline = Date.now() + 60000; ; ) {
		if (inst.exited) throw new Error(`factd (${name}) exited before it was ready: ${inst.exited.error || `code ${inst.exited.code}, signal ${inst.exited.signal}`}`);
		try {
			const r = await fetch(`${inst.base}/readyz`, { signal: AbortSignal.timeout(2000) });
			if (r.status === 200) return inst;
		} catch {
			// not listening yet
		}
		if (Date.now() > deadline) throw new Error(`factd (${name}) was not ready within 60 s`);
		await sleep(100);
	}
}

async function stopFactd(inst) {
	if (inst.exited) return inst.killed ? null : `exited on its own (${inst.exited.error || `code ${inst.exited.code}, signal ${inst.exited.signal}`})`;
	inst.child.kill('SIGTERM');
	const result = await Promise.race([inst.exitedPromise, sleep(20000).then(() => null)]);
	if (!result) {
		inst.child.kill('SIGKILL');
		return 'did not exit within 20 s of SIGTERM';
	}
	return result.code === 0 ? null : `exited with code ${result.code}, signal ${result.signal} after SIGTERM`;
}

// ---- HTTP -----------------------------------------------------------------------------

const failures = [];
function fail(what) {
	failures.push(what);
	if (failures.length <= 50) console.error(`FAIL ${what}`);
}
let requests = 0;

async function http(base, method, p, json) {
	const headers = {};
	let body;
	if (json !== undefined) {
		headers['Content-Type'] = 'application/json';
		body = typeof json === 'string' ? json : JSON.stringify(json);
	}
	requests++;
	for (let attempt = 1; ; attempt++) {
		try {
			const res = await fetch(base + p, { method, headers, body, signal: AbortSignal.timeout(60000) });
			const text = await res.text();
			const ct = res.headers.get('content-type') || '';
			let doc = null;
			try {
				doc = text ? JSON.parse(text) : null;
			} catch {
				fail(`${method} ${p}: ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
			}
			if (res.status >= 400 && !ct.startsWith('application/problem+json'))
				fail(`${method} ${p}: ${res.status} with Content-Type ${ct}, not application/problem+json`);
			if (res.status >= 500 && res.status !== 503) fail(`${method} ${p}: ${res.status} ${text.slice(0, 300)}`);
			if (res.status === 503 && attempt < 20) {
				await sleep(200);
				continue;
			}
			return { status: res.status, body: doc, slug: res.status >= 400 && doc?.type ? String(doc.type).split('/').pop() : null };
		} catch (e) {
			// GETs are safe to repeat; a command is not (its outcome would be unknown)
			if (method === 'GET' && attempt < 5) {
				await sleep(200);
				continue;
			}
			throw new Error(`${method} ${p}: ${e.message}`);
		}
	}
}

/* GET every page of an aggregate's events. */
async function allEvents(base, p) {
	const out = [];
	for (let from = 1; ; ) {
		const r = await http(base, 'GET', `${p}?from_version=${from}&limit=1000`);
		if (r.status === 404) return out;
		if (r.status !== 200) throw new Error(`GET ${p}: ${r.status}`);
		out.push(...r.body.events);
		if (r.body.events.length < 1000) return out;
		from = r.body.events[r.body.events.length - 1].version + 1;
	}
}

// ---- running the plan -------------------------------------------------------------------

// What a command may answer: status -> slugs (null: any body).  Anything else fails.
const ALLOWED = {
	create: { 201: null },
	add_line: { 200: null, 404: ['order-not-found'], 409: ['order-not-draft'] },
	remove_line: { 200: null, 404: ['order-not-found'], 409: ['order-not-draft', 'line-not-found'] },
	place: { 200: null, 404: ['order-not-found'], 409: ['order-not-draft', 'order-empty'] },
	cancel: { 200: null, 404: ['order-not-found'], 409: ['order-shipped', 'order-cancelled'] },
	ship: { 200: null, 404: ['order-not-found'], 409: ['order-not-confirmed'] },
	restock: { 200: null },
	abort: { 202: null, 404: ['not-found'], 409: ['saga-state'] },
	retry: { 202: null, 404: ['not-found'], 409: ['saga-state'] },
	refund: { 200: null, 404: ['not-found', 'payment-not-found'], 409: ['payment-not-authorised', 'refund-exceeds-payment', 'order-not-cancelled'] },
	bad: { 400: ['invalid-field', 'invalid-json'], 404: ['order-not-found', 'not-found'] },
};

const stats = { commands: 0, outcomes: {} };
const restocked = new Map(); // product id -> units added by restocks answered 200
const retried = []; // failed sagas an operator's retry resumed, and why they had failed

function record(cmd, r, where) {
	stats.commands++;
	const key = `${cmd.op} ${r.status}${r.slug ? ' ' + r.slug : ''}`;
	stats.outcomes[key] = (stats.outcomes[key] || 0) + 1;
	const allowed = ALLOWED[cmd.op][r.status];
	if (allowed === undefined || (allowed && !allowed.includes(r.slug)))
		fail(`${where}: ${cmd.op} ${JSON.stringify(cmd)} answered ${r.status} ${JSON.stringify(r.body)}`);
}

const ENDED = new Set(['completed', 'compensated', 'failed']);

/* The order's fulfillment saga (null when it has none yet); waits for it to end when asked. */
async function sagaOf(base, order, waitEnd) {
	const deadline = Date.now() + 20000;
	for (;;) {
		const r = await http(base, 'GET', `/orders/${order}/saga`);
		const s = r.status === 200 ? r.body : null;
		if (!waitEnd || (s && ENDED.has(s.status)) || Date.now() > deadline) return s;
		if (!s) {
			const o = await http(base, 'GET', `/orders/${order}`);
			if (o.status !== 200 || o.body.status === 'draft' || o.body.status === 'cancelled') return null; // never placed
		}
		await sleep(40);
	}
}

async function wait(base, cmd) {
	if (cmd.wait === 'delay') await sleep(cmd.delay);
	else if (cmd.wait === 'saga_end') await sagaOf(base, cmd.order, true);
}

async function runCommand(base, cmd, where) {
	let r;
	switch (cmd.op) {
	case 'create':
		r = await http(base, 'POST', '/orders', { order_id: cmd.order, customer_id: 'c-inv' });
		break;
	case 'add_line':
		r = await http(base, 'POST', `/orders/${cmd.order}/lines`, { product_id: cmd.product, quantity: cmd.quantity, unit_price_cents: cmd.price });
		break;
	case 'remove_line':
		r = await http(base, 'DELETE', `/orders/${cmd.order}/lines/${cmd.product}`);
		break;
	case 'place':
		r = await http(base, 'POST', `/orders/${cmd.order}/place`);
		break;
	case 'cancel':
		await wait(base, cmd);
		r = await http(base, 'POST', `/orders/${cmd.order}/cancel`, { reason: `cancelled by ${where} (${cmd.wait})` });
		break;
	case 'ship':
		await wait(base, cmd);
		r = await http(base, 'POST', `/orders/${cmd.order}/ship`);
		break;
	case 'restock':
		r = await http(base, 'POST', `/products/${cmd.product}/restock`, { quantity: cmd.quantity });
		if (r.status === 200) restocked.set(cmd.product, (restocked.get(cmd.product) || 0) + cmd.quantity);
		break;
	case 'abort':
	case 'retry': {
		await wait(base, cmd);
		const s = await sagaOf(base, cmd.order, false);
		r = await http(base, 'POST', `/sagas/${s ? s.id : uuid()}/${cmd.op}`);
		if (cmd.op === 'retry' && r.status === 202) retried.push(`${s.id} (order ${cmd.order}): ${r.body?.error}`);
		break;
	}
	case 'refund': {
		await wait(base, cmd);
		const s = await sagaOf(base, cmd.order, false);
		const pid = s?.data?.payment_id || uuid();
		let body = {};
		if (cmd.part) {
			const p = await http(base, 'GET', `/payments/${pid}`);
			const left = p.status === 200 ? p.body.amount_cents - p.body.refunded_cents : 0;
			if (left > 1) body = { amount_cents: Math.max(1, Math.floor(left / 3)) };
		}
		r = await http(base, 'POST', `/payments/${pid}/refund`, body);
		break;
	}
	case 'bad': {
		const k = cmd.kind;
		if (k === 0) r = await http(base, 'POST', `/orders/${cmd.order}/lines`, { product_id: cmd.product, quantity: 0, unit_price_cents: 1 });
		else if (k === 1) r = await http(base, 'POST', `/orders/${cmd.order}/cancel`, {});
		else if (k === 2) r = await http(base, 'POST', `/orders/${cmd.order}/cancel`, '{"reason": ');
		else if (k === 3) r = await http(base, 'POST', `/products/${cmd.product}/restock`, { quantity: -1 });
		else r = await http(base, 'POST', `/orders/${cmd.order}/lines`, { product_id: 'no such product!', quantity: 1, unit_price_cents: 1 });
		break;
	}
	default:
		throw new Error(`unknown command ${cmd.op}`);
	}
	record(cmd, r, where);
}

// ---- the invariants -----------------------------------------------------------------------

const sum = (arr) => arr.reduce((a, b) => a + b, 0);

/* Reads the whole shop through the API and returns the violations found. */
async function check(base, orderIds) {
	const v = [];
	const orders = [];
	for (const id of orderIds) {
		const r = await http(base, 'GET', `/orders/${id}`);
		if (r.status === 404) continue;
		if (r.status !== 200) throw new Error(`GET /orders/${id}: ${r.status}`);
		const o = r.body;
		o.events = await allEvents(base, `/orders/${id}/events`);
		o.saga = await sagaOf(base, id, false);
		o.payment = null;
		if (o.saga?.data?.payment_id) {
			const p = await http(base, 'GET', `/payments/${o.saga.data.payment_id}`);
			if (p.status === 200) {
				o.payment = p.body;
				o.payment.events = await allEvents(base, `/payments/${o.saga.data.payment_id}/events`);
			}
		}
		orders.push(o);
	}
	const sagas = [];
	for (let after = null; ; ) {
		const r = await http(base, 'GET', `/sagas?limit=1000${after ? '&after=' + after : ''}`);
		if (r.status !== 200) throw new Error(`GET /sagas: ${r.status}`);
		sagas.push(...r.body.items);
		if (!r.body.next) break;
		after = r.body.next;
	}
	for (const s of sagas.filter((x) => x.type !== 'order_fulfillment' && x.status === 'failed')) v.push(`saga ${s.type} ${s.id} failed: ${s.error}`);
	const live = sagas.filter((s) => s.status === 'running' || s.status === 'compensating');
	if (live.length) v.push(`sagas still live: ${live.map((s) => `${s.type} ${s.id} ${s.status}`).slice(0, 5).join(', ')}${live.length > 5 ? ', ...' : ''}`);

	// holders of reservations: confirmed orders, and placed orders while their saga runs
	const holds = (o) => o.status === 'confirmed' || (o.status === 'placed' && o.saga && !ENDED.has(o.saga.status));
	for (const p of products) {
		const r = await http(base, 'GET', `/products/${p.id}`);
		if (r.status !== 200) {
			v.push(`product ${p.id}: GET answered ${r.status}`);
			continue;
		}
		const s = r.body;
		const w = `product ${p.id}`;
		if (s.available + s.reserved + s.committed !== s.stocked)
			v.push(`${w}: available ${s.available} + reserved ${s.reserved} + committed ${s.committed} != stocked ${s.stocked}`);
		if (s.available < 0 || s.reserved < 0 || s.committed < 0) v.push(`${w}: a negative count ${JSON.stringify(s)}`);
		const stocked = p.stock + (restocked.get(p.id) || 0);
		if (s.stocked !== stocked) v.push(`${w}: stocked ${s.stocked}, but created with ${p.stock} and restocked by ${stocked - p.stock}`);
		const qty = (o) => sum(o.lines.filter((l) => l.product_id === p.id).map((l) => l.quantity));
		const holders = orders.filter((o) => holds(o) && qty(o) > 0);
		const want = sum(holders.map(qty));
		if (s.reserved !== want)
			v.push(`${w}: reserved ${s.reserved}, but the orders holding reservations have ${want} (${holders.map((o) => `${o.order_id} ${o.status} ${qty(o)}`).join(', ') || 'none'})`);
		const byOrder = new Map(orders.map((o) => [o.order_id, o]));
		for (const res of s.reservations) {
			const o = byOrder.get(res.order_id);
			if (!o) v.push(`${w}: a reservation of ${res.quantity} for an unknown order ${res.order_id}`);
			else if (o.status === 'cancelled') v.push(`${w}: reservation of ${res.quantity} belongs to cancelled order ${o.order_id} (saga ${o.saga?.status})`);
			else if (!holds(o)) v.push(`${w}: reservation of ${res.quantity} belongs to order ${o.order_id}, which is ${o.status} (saga ${o.saga?.status})`);
			else if (res.quantity !== qty(o)) v.push(`${w}: reservation of ${res.quantity} for order ${o.order_id}, whose lines have ${qty(o)}`);
		}
		for (const o of holders)
			if (!s.reservations.some((x) => x.order_id === o.order_id)) v.push(`${w}: ${o.status} order ${o.order_id} holds no reservation of its ${qty(o)}`);
		const shipped = sum(orders.filter((o) => o.status === 'shipped').map(qty));
		if (s.committed !== shipped) v.push(`${w}: committed ${s.committed}, but the shipped orders have ${shipped}`);
		// exactly once: per order, one reservation and one close at most
		const evs = await allEvents(base, `/products/${p.id}/events`);
		const seen = new Map();
		for (const e of evs) {
			if (!e.data?.order_id) continue;
			const k = `${e.data.order_id} ${e.type === 'StockReserved' ? 'reserved' : 'closed'}`;
			seen.set(k, (seen.get(k) || 0) + 1);
		}
		for (const [k, n] of seen) if (n > 1) v.push(`${w}: order ${k} ${n} times`);
	}

	for (const o of orders) {
		const w = `order ${o.order_id} (${o.status}, saga ${o.saga ? o.saga.status : 'none'})`;
		const types = o.events.map((e) => e.type);
		const count = (t) => types.filter((x) => x === t).length;
		const ends = types.filter((t) => t === 'OrderShipped' || t === 'OrderCancelled');
		if (ends.length > 1) v.push(`${w}: ${ends.length} end events: ${types.join(' ')}`);
		if (ends.length && types.lastIndexOf(ends[0]) !== types.length - 1) v.push(`${w}: events after its end: ${types.join(' ')}`);
		for (const t of ['OrderCreated', 'OrderPlaced', 'OrderConfirmed'])
			if (count(t) > 1) v.push(`${w}: ${count(t)} ${t} events`);
		const pay = o.payment;
		const ps = pay ? `payment ${pay.status} ${pay.refunded_cents}/${pay.amount_cents}` : 'no payment';
		if (o.status === 'cancelled' && pay) {
			const settled = pay.status === 'declined' || (pay.status === 'refunded' && pay.refunded_cents === pay.amount_cents);
			if (!settled) v.push(`${w}: cancelled, but its ${ps}`);
		}
		if (o.status === 'confirmed' || o.status === 'shipped') {
			if (!pay || pay.status !== 'authorised') v.push(`${w}: ${o.status}, but its ${ps}`);
			else if (pay.amount_cents !== o.total_cents) v.push(`${w}: ${ps}, but the order's total is ${o.total_cents}`);
			if (!o.saga || (o.saga.status !== 'completed' && !(o.status === 'shipped' && o.saga.status === 'failed')))
				v.push(`${w}: ${o.status}, but its saga did not complete`);
		}
		if (o.status === 'cancelled' && o.saga && o.saga.status === 'completed') v.push(`${w}: cancelled, but its saga stays completed`);
		// a saga fails only when the shop cannot undo it: its order shipped meanwhile
		if (o.saga && o.saga.status === 'failed' && o.status !== 'shipped') v.push(`${w}: its saga failed: ${o.saga.error}`);
		if (o.status === 'placed' && o.saga && ENDED.has(o.saga.status)) v.push(`${w}: still placed after its saga ended`);
		if (pay) {
			const pt = pay.events.map((e) => e.type);
			for (const t of ['PaymentRequested', 'PaymentAuthorised', 'PaymentDeclined'])
				if (pt.filter((x) => x === t).length > 1) v.push(`${w}: ${t} ${pt.filter((x) => x === t).length} times`);
			if (pt.includes('PaymentAuthorised') && pt.includes('PaymentDeclined')) v.push(`${w}: payment both authorised and declined`);
			const refunded = sum(pay.events.filter((e) => e.type === 'PaymentRefunded').map((e) => e.data.amount_cents));
			if (refunded > pay.amount_cents) v.push(`${w}: refunds of ${refunded} exceed the payment of ${pay.amount_cents}`);
		}
	}
	return { violations: v, orders, sagas };
}

// ---- main ---------------------------------------------------------------------------------

async function main() {
	if (!adminUrl) throw new Error('FACTD_TEST_ADMIN_URL is not set (scripts/test sets it)');
	console.log(`invariants: seed ${SEED} (FACTD_INVARIANTS_SEED=${SEED} replays the plan), ${COMMANDS} commands, ${CLIENTS} clients, ${SERVERS} serving process(es), ${CRASHES} crash(es)`);
	const { plan, orders } = makePlan();
	const started = Date.now();
	const dbName = `invariants_${process.pid}_${Date.now().toString(36)}`;
	const url = await createDatabase(dbName);
	let crasher = null;
	try {
		const servers = [];
		for (let i = 0; i < SERVERS; i++) servers.push(await startFactd(`server ${i}`, { FACTD_DATABASE_URL: url }));
		// the extra process takes part in the saga work and is killed now and then
		const crashEnv = { FACTD_DATABASE_URL: url, FACTD_PROJECTIONS: '0' };
		if (CRASHES) crasher = await startFactd('crasher', crashEnv);
		const base = servers[0].base;
		for (const p of products) {
			const r = await http(base, 'POST', '/products', { product_id: p.id, name: `product ${p.id}`, stock: p.stock });
			if (r.status !== 201) throw new Error(`create product ${p.id}: ${r.status} ${JSON.stringify(r.body)}`);
		}
		let running = true;
		const crashes = (async () => {
			const crashRand = prng(SEED ^ 0x5eed);
			for (let k = 0; k < CRASHES && running; k++) {
				await sleep(200 + Math.floor(crashRand() * 1500));
				if (!running) break;
				crasher.killed = true;
				crasher.child.kill('SIGKILL');
				await crasher.exitedPromise;
				crasher = await startFactd(`crasher (after ${k + 1} kill${k ? 's' : ''})`, crashEnv);
			}
		})();
		await Promise.all(plan.map(async (cmds, c) => {
			const b = servers[c % servers.length].base;
			for (const cmd of cmds) await runCommand(b, cmd, `client ${c}`);
		}));
		running = false;
		await crashes;
		const ran = Date.now();

		// Let the sagas settle: check until the state holds or the time is up.
		let result;
		for (const deadline = Date.now() + SETTLE_MS; ; ) {
			result = await check(base, orders);
			if (!result.violations.length || Date.now() > deadline) break;
			await sleep(1000);
		}
		for (const x of result.violations) fail(x);
		const byStatus = {};
		for (const o of result.orders) byStatus[o.status] = (byStatus[o.status] || 0) + 1;
		const sagaStatus = {};
		for (const s of result.sagas) sagaStatus[`${s.type} ${s.status}`] = (sagaStatus[`${s.type} ${s.status}`] || 0) + 1;
		console.log(`invariants: ${stats.commands} commands in ${((ran - started) / 1000).toFixed(1)} s, settled and checked in ${((Date.now() - ran) / 1000).toFixed(1)} s; ${requests} requests`);
		console.log(`orders: ${JSON.stringify(byStatus)}`);
		console.log(`sagas: ${JSON.stringify(sagaStatus)}`);
		// why the compensated sagas compensated: where the cancels landed, among the rest
		const why = {};
		for (const o of result.orders) {
			const sg = o.saga;
			if (!sg || (sg.status !== 'compensated' && sg.status !== 'failed')) continue;
			const e = sg.error || '';
			const confirmed = (sg.history || []).some((h) => h.step === 'confirm_order' && h.kind === 'action' && h.outcome === 'succeeded');
			const k = e.startsWith('order cancelled') ? (confirmed ? 'cancel after confirmation' : 'cancel during the saga')
				: e.startsWith('aborted') ? (confirmed ? 'abort racing confirmation' : 'abort during the saga')
				: /declined/.test(e) ? 'payment declined' : /insufficient-stock/.test(e) ? 'out of stock' : e.replace(/:.*/, '');
			const key = `${sg.status}: ${k}`;
			why[key] = (why[key] || 0) + 1;
		}
		console.log(`compensations: ${JSON.stringify(why)}`);
		for (const x of retried) console.log(`retried a failed saga: ${x}`);
		console.log(`outcomes: ${Object.entries(stats.outcomes).sort().map(([k, n]) => `${k}: ${n}`).join(', ')}`);
	} finally {
		for (const inst of instances) {
			if (inst.exited && inst.killed) continue;
			const why = await stopFactd(inst);
			if (why) fail(`factd (${inst.name}) ${why}`);
		}
		try {
			psql(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
		} catch (e) {
			console.error(`invariants: cannot drop database ${dbName}: ${e.stderr || e.message}`);
		}
	}
}

try {
	await main();
} catch (e) {
	fail(e.stack || String(e));
}
if (failures.length) {
	for (const inst of instances.filter((i) => i.log.length)) {
		console.error(`\n--- factd (${inst.name}) log, last 30 lines ---`);
		console.error(inst.log.slice(-30).join('\n'));
	}
	console.error(`\ninvariants: ${failures.length} violation(s); replay with FACTD_INVARIANTS_SEED=${SEED} FACTD_INVARIANTS_COMMANDS=${COMMANDS} FACTD_INVARIANTS_CLIENTS=${CLIENTS} FACTD_INVARIANTS_SERVERS=${SERVERS} FACTD_INVARIANTS_CRASHES=${CRASHES} FACTD_INVARIANTS_PRODUCTS=${PRODUCTS}`);
	process.exit(1);
}
console.log('invariants: every invariant holds');
