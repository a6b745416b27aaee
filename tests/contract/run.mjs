#!/usr/bin/env node
// The API contract test: starts factd against a fresh database, exercises every
// operation of openapi.yaml with its documented successes and errors, and checks
// each real response against the document: the status must be documented for the
// operation, documented headers must be present and well-formed, and the body must
// match the response's schema for its media type (JSON Schema 2020-12, with ajv).
// A request to a path or method openapi.yaml does not document is a failure (unless
// the step probes exactly that, expecting 404 or 405), and so is a route in factd's
// route table (src/http/routes.c and the app's, apps/shop/routes.c) that openapi.yaml does not document.
//
//   node tests/contract/run.mjs [path/to/factd]
//   node tests/contract/run.mjs --app bank [path/to/factd-bank]
//
// factd comes from the argument, else FACTD_BIN, else build-test/factd.  With
// --app bank it is the bank app of examples/bank instead (factd-bank, default
// build-test/examples/bank/factd-bank), checked against examples/bank/openapi.yaml
// and examples/bank/routes.c; that document describes the bank's operations only,
// so of factd's own routes only the bank's must be documented there.
// FACTD_TEST_ADMIN_URL (set by scripts/test) is a superuser URL of a PostgreSQL
// cluster holding the migrated template database factd_template; the test creates
// its databases there and drops them afterwards.  Exits non-zero on any failure.

import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const APPS = {
	shop: { spec: 'openapi.yaml', routes: 'apps/shop/routes.c', bin: 'build-test/factd', documentsFramework: true },
	bank: { spec: 'examples/bank/openapi.yaml', routes: 'examples/bank/routes.c', bin: 'build-test/examples/bank/factd-bank', documentsFramework: false },
};
const args = process.argv.slice(2);
const appName = args[0] === '--app' ? args.splice(0, 2)[1] : 'shop';
const APP = APPS[appName];
if (!APP) throw new Error(`unknown app ${appName}; one of ${Object.keys(APPS).join(', ')}`);
const specFile = process.env.FACTD_OPENAPI || path.join(root, APP.spec);
// The tables a server serves: the framework's routes, then the app's (FACTD_APP_ROUTES for another app).
const frameworkRoutes = path.join(root, 'src/http/routes.c');
const appRoutes = path.resolve(process.env.FACTD_APP_ROUTES || path.join(root, APP.routes));
const routesFiles = [frameworkRoutes, appRoutes];
const factdBin = path.resolve(args[0] || (appName === 'shop' && process.env.FACTD_BIN) || path.join(root, APP.bin));
const adminUrl = process.env.FACTD_TEST_ADMIN_URL;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const PROBE_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

// ---- failures -------------------------------------------------------------------

const failures = [];
let section = '';
function fail(where, message) {
	const line = `${section ? section + ': ' : ''}${where}: ${message}`;
	failures.push(line);
	console.error(`FAIL ${line}`);
}

// ---- the document -----------------------------------------------------------------

const spec = YAML.parse(readFileSync(specFile, 'utf8'));

function pointerGet(doc, pointer) {
	let v = doc;
	for (const raw of pointer.split('/').slice(1)) {
		const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
		if (v === null || typeof v !== 'object' || !(key in v)) throw new Error(`openapi.yaml: no ${pointer}`);
		v = v[key];
	}
	return v;
}

/** Follows local $refs ("#/components/...") to the object they name. */
function deref(obj) {
	const seen = new Set();
	while (obj && typeof obj === 'object' && typeof obj.$ref === 'string') {
		if (!obj.$ref.startsWith('#/') || seen.has(obj.$ref)) throw new Error(`openapi.yaml: cannot follow $ref ${obj.$ref}`);
		seen.add(obj.$ref);
		obj = pointerGet(spec, obj.$ref.slice(1));
	}
	return obj;
}

// Every schema the test validates against lives in one JSON Schema document whose
// "components" is openapi.yaml's, so the "#/components/schemas/..." references
// inside them resolve as they do in openapi.yaml.  Inline schemas (not a plain $ref)
// are placed under $defs of the same document, keyed by their location.
const SCHEMA_ID = 'urn:factd:openapi';
const schemaDoc = { $id: SCHEMA_ID, $defs: {}, components: spec.components };
const schemaRefs = new Map(); // schema object -> "$ref" of it inside schemaDoc

function registerSchema(schema, where) {
	if (schemaRefs.has(schema)) return;
	if (typeof schema.$ref === 'string' && schema.$ref.startsWith('#/components/') && Object.keys(schema).length === 1) {
		schemaRefs.set(schema, SCHEMA_ID + schema.$ref);
		return;
	}
	const key = `s${schemaRefs.size}`;
	schemaDoc.$defs[key] = { ...schema, $comment: where };
	schemaRefs.set(schema, `${SCHEMA_ID}#/$defs/${key}`);
}

// The operations, and the schemas of their responses and response headers.
const operations = []; // {id, method, path, op, regex, literals}
for (const [p, item] of Object.entries(spec.paths || {})) {
	const segs = p.split('/').slice(1);
	const regex = new RegExp('^/' + segs.map((s) => (/^\{.+\}$/.test(s) ? '[^/]+' : escapeRe(s))).join('/') + '$');
	const literals = segs.filter((s) => !/^\{.+\}$/.test(s)).length;
	for (const m of METHODS) {
		if (!item[m]) continue;
		const op = item[m];
		// the query parameters it documents (its own and its path's)
		const query = new Set([...(item.parameters || []), ...(op.parameters || [])].map(deref).filter((q) => q?.in === 'query').map((q) => q.name));
		operations.push({ id: op.operationId || `${m.toUpperCase()} ${p}`, method: m.toUpperCase(), path: p, op, regex, literals, query });
		for (const [status, r] of Object.entries(op.responses || {})) {
			const resp = deref(r);
			for (const [mt, media] of Object.entries(resp.content || {}))
				if (media.schema) registerSchema(media.schema, `${m} ${p} ${status} ${mt}`);
			for (const [name, h] of Object.entries(resp.headers || {})) {
				const header = deref(h);
				if (header.schema) registerSchema(header.schema, `${m} ${p} ${status} header ${name}`);
			}
		}
	}
}
const problemSchema = { $ref: '#/components/schemas/Problem' };
registerSchema(problemSchema, 'unknown paths');

function escapeRe(s) {
	return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Unknown keywords (likely typos) fail; JSON Schema's laxer corners only warn.
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: 'log', strictTuples: 'log', strictRequired: false, allowUnionTypes: true });
addFormats(ajv);
ajv.addFormat('int64', { type: 'number', validate: (n) => Number.isInteger(n) });
ajv.addFormat('int32', { type: 'number', validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat('double', { type: 'number', validate: () => true });
ajv.addFormat('float', { type: 'number', validate: () => true });
for (const k of ['components', 'example', 'discriminator', 'xml', 'externalDocs']) ajv.addKeyword(k);
ajv.addSchema(schemaDoc);
const validators = new Map();
function validatorFor(schema) {
	const ref = schemaRefs.get(schema);
	if (!ref) throw new Error('schema was not registered');
	if (!validators.has(ref)) {
		try {
			validators.set(ref, ajv.compile({ $ref: ref }));
		} catch (e) {
			fail('openapi.yaml', `cannot compile the schema ${ref}: ${e.message}`);
			const never = () => false;
			never.errors = [{ message: 'the schema does not compile' }];
			validators.set(ref, never);
		}
	}
	return validators.get(ref);
}

/** Members of `value` that its schema does not name (where the schema does not allow extra members). */
function undocumentedMembers(schema, value, ptr, out) {
	schema = deref(schema);
	if (!schema || typeof schema !== 'object' || value === null || typeof value !== 'object') return out;
	const parts = [];
	(function collect(s) {
		s = deref(s);
		if (!s || typeof s !== 'object') return;
		parts.push(s);
		for (const k of ['allOf', 'oneOf', 'anyOf']) (s[k] || []).forEach(collect);
	})(schema);
	if (Array.isArray(value)) {
		const items = parts.map((s) => s.items).filter(Boolean);
		value.forEach((v, i) => items.forEach((it) => undocumentedMembers(it, v, `${ptr}/${i}`, out)));
		return out;
	}
	const props = new Map();
	for (const s of parts) for (const [k, v] of Object.entries(s.properties || {})) props.set(k, [...(props.get(k) || []), v]);
	const open = parts.some((s) => s.additionalProperties === true || typeof s.additionalProperties === 'object') ||
		!parts.some((s) => s.properties);
	for (const [k, v] of Object.entries(value)) {
		if (props.has(k)) props.get(k).forEach((s) => undocumentedMembers(s, v, `${ptr}/${k}`, out));
		else if (!open) out.push(`${ptr}/${k}`);
	}
	return out;
}

function findPath(reqPath) {
	const matches = operations.filter((o) => o.regex.test(reqPath));
	if (!matches.length) return null;
	const best = Math.max(...matches.map((o) => o.literals));
	return matches.filter((o) => o.literals === best);
}

// ---- coverage -----------------------------------------------------------------------

const coverage = new Map(operations.map((o) => [o.id, new Set()]));
const probes = []; // lines about requests to undocumented paths and methods
// Documented statuses the test does not provoke, and why.  Anything else documented
// and not exercised is a failure, so a new operation or status needs a test step.
const NOT_PROVOKED = { '500': 'provoked only where an aggregate is loaded (a broken aggregate); elsewhere it needs a server fault' };
const BEST_EFFORT = {
	'processPayment 412': 'needs a concurrent change between reading the payment and recording the answer (concurrent burst)',
	'restockProduct 409': 'stock-too-large needs stock beyond 2^63; concurrency-conflict needs contention (concurrent burst, FACTD_COMMAND_RETRIES=0)',
};

// ---- HTTP -----------------------------------------------------------------------------

function send(base, method, reqPath, { query, headers = {}, json, body, chunked = false } = {}) {
	const url = new URL(base + reqPath);
	for (const [k, v] of Object.entries(query || {})) url.searchParams.append(k, v);
	const h = { ...headers };
	let payload = null;
	if (json !== undefined) {
		payload = Buffer.from(typeof json === 'string' ? json : JSON.stringify(json));
		if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
	} else if (body !== undefined) {
		payload = Buffer.isBuffer(body) ? body : Buffer.from(body);
	}
	if (payload && !chunked) h['Content-Length'] = String(payload.length);
	// A large body waits for "100 Continue", as curl does: factd refuses an
	// oversized one (413) before reading it and closes the connection, and a
	// client still writing the body then sees EPIPE instead of the answer.
	const expectContinue = payload && !chunked && payload.length > 65536;
	if (expectContinue) h.Expect = '100-continue';
	return new Promise((resolve, reject) => {
		let done = false;
		const req = http.request(url, { method, headers: h, agent: false }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				done = true;
				resolve({ method, path: reqPath, status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
			});
			res.on('error', (e) => done || reject(e));
		});
		req.setTimeout(30000, () => req.destroy(new Error(`${method} ${reqPath}: no answer within 30 s`)));
		// factd may answer (413, 415) before reading the whole body and close the connection.
		req.on('error', (e) => done || reject(e));
		if (expectContinue) {
			req.on('continue', () => req.end(payload));
		} else {
			if (payload) req.write(payload);
			req.end();
		}
	});
}

function mediaType(ct) {
	return (ct || '').split(';')[0].trim().toLowerCase();
}

/**
 * Checks one real response against openapi.yaml and records it in the coverage.
 * expect: the status the step wants (a number or a list), and `type`, the problem slug.
 */
function checkResponse(res, expect, label) {
	const where = `${label} (${res.method} ${res.path} -> ${res.status})`;
	const rid = res.headers['x-request-id'];
	// The console's files are revalidated by their ETags (Cache-Control: no-cache, documented on them).
	const consoleFile = /^\/console(\/|$)/.test(res.path) && [200, 304].includes(res.status);
	if (!consoleFile && res.headers['cache-control'] !== 'no-store') fail(where, `Cache-Control is ${JSON.stringify(res.headers['cache-control'])}, not no-store`);
	if (expect.requestId && rid !== expect.requestId) fail(where, `X-Request-Id ${JSON.stringify(rid)} does not echo ${expect.requestId}`);

	let body;
	const isJson = /^application\/([a-z0-9.+-]*\+)?json$/.test(mediaType(res.headers['content-type']));
	if (res.text.length && isJson) {
		try {
			body = JSON.parse(res.text);
		} catch (e) {
			fail(where, `body is not JSON: ${e.message}`);
		}
	}
	const wanted = [].concat(expect.status);
	if (!wanted.includes(res.status)) fail(where, `expected status ${wanted.join(' or ')}; body ${res.text.slice(0, 300)}`);
	if (expect.type && body && body.type !== `https://factd.dev/problems/${expect.type}`)
		fail(where, `expected problem type ${expect.type}, got ${body.type}`);

	// Which operation(s) of openapi.yaml answer this request?
	const candidates = findPath(res.path);
	if (!candidates) {
		if (!expect.unknownPath) fail(where, 'the path is not in openapi.yaml');
		probes.push(`${res.method} ${res.path} -> ${res.status} (undocumented path)`);
		if (res.status !== 404) fail(where, 'an undocumented path must answer 404');
		const v = validatorFor(problemSchema);
		if (!body || !v(body)) fail(where, `404 body is not a Problem: ${ajv.errorsText(v.errors)}`);
		if (body && body.type !== 'https://factd.dev/problems/not-found') fail(where, `404 type is ${body && body.type}`);
		return body;
	}
	let ops = candidates.filter((o) => o.method === res.method);
	if (!ops.length && res.method === 'HEAD') ops = candidates.filter((o) => o.method === 'GET');
	if (!ops.length) {
		// A documented path with an undocumented method: 405, documented on the path's operations.
		if (!expect.undocumentedMethod) fail(where, `${res.method} is not documented for ${candidates[0].path}`);
		probes.push(`${res.method} ${res.path} -> ${res.status} (method not documented for ${candidates[0].path})`);
		const allowed = new Set(candidates.map((o) => o.method));
		if (allowed.has('GET')) allowed.add('HEAD');
		const got = new Set((res.headers.allow || '').split(',').map((s) => s.trim()).filter(Boolean));
		if (res.status === 405 && [...allowed].sort().join() !== [...got].sort().join())
			fail(where, `Allow is "${res.headers.allow}" but openapi.yaml documents ${[...allowed].sort().join(', ')} for ${candidates[0].path}`);
		ops = candidates;
	}
	const responseSpecs = []; // [{op, resp}]
	for (const o of ops) {
		const r = o.op.responses?.[String(res.status)] || o.op.responses?.[`${String(res.status)[0]}XX`] || o.op.responses?.default;
		if (!r) {
			fail(where, `status ${res.status} is not documented for ${o.id}`);
			continue;
		}
		coverage.get(o.id).add(String(res.status));
		responseSpecs.push({ op: o, resp: deref(r) });
	}
	for (const { op, resp } of responseSpecs) {
		const w = `${where} [${op.id}]`;
		for (const [name, h] of Object.entries(resp.headers || {})) {
			const header = deref(h);
			const value = res.headers[name.toLowerCase()];
			if (value === undefined) {
				if (header.required) fail(w, `required header ${name} is missing`);
				continue;
			}
			if (!header.schema) continue;
			const s = deref(header.schema);
			const typed = (s.type === 'integer' || s.type === 'number') && /^-?[0-9]+(\.[0-9]+)?$/.test(value) ? Number(value) : value;
			const v = validatorFor(header.schema);
			if (!v(typed)) fail(w, `header ${name}: ${JSON.stringify(value)} ${ajv.errorsText(v.errors)}`);
		}
		if (res.method === 'HEAD') {
			if (res.text.length) fail(w, 'a HEAD response has a body');
			continue;
		}
		const content = resp.content || {};
		if (!Object.keys(content).length) {
			if (res.text.length) fail(w, 'the response has a body but openapi.yaml documents none');
			continue;
		}
		const mt = mediaType(res.headers['content-type']);
		const media = Object.entries(content).find(([k]) => mediaType(k) === mt)?.[1];
		if (!media) {
			fail(w, `Content-Type ${JSON.stringify(res.headers['content-type'])} is not documented (${Object.keys(content).join(', ')})`);
			continue;
		}
		if (!media.schema) continue;
		const value = isJson ? body : res.text;
		if (value === undefined) {
			fail(w, 'the body is empty');
			continue;
		}
		const v = validatorFor(media.schema);
		if (!v(value)) fail(w, `body does not match the schema: ${ajv.errorsText(v.errors, { dataVar: 'body' })}; body ${res.text.slice(0, 400)}`);
		const extra = undocumentedMembers(media.schema, value, '', []);
		if (extra.length) fail(w, `body members not in the schema: ${extra.join(', ')}`);
	}
	if (body && mediaType(res.headers['content-type']) === 'application/problem+json') {
		if (body.status !== res.status) fail(where, `problem status ${body.status} differs from the HTTP status`);
		if (body.request_id !== rid) fail(where, `problem request_id ${body.request_id} differs from X-Request-Id ${rid}`);
	}
	return body;
}

// ---- factd and PostgreSQL ------------------------------------------------------------

function psql(sql) {
	return execFileSync('psql', [adminUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function dbUrl(name) {
	const u = new URL(adminUrl);
	u.pathname = '/' + name;
	return u.toString();
}

async function createDatabase(name, template) {
	for (let attempt = 1; ; attempt++) {
		try {
			psql(`CREATE DATABASE "${name}" TEMPLATE "${template}"`);
			return dbUrl(name);
		} catch (e) {
			// CREATE DATABASE ... TEMPLATE fails while another session uses the template.
			if (attempt >= 20 || !/being accessed by other users/.test(String(e.stderr))) throw new Error(`cannot create database ${name}: ${e.stderr || e.message}`);
			await sleep(250);
		}
	}
}

function dropDatabase(name) {
	try {
		psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
	} catch (e) {
		console.error(`contract: cannot drop database ${name}: ${e.stderr || e.message}`);
	}
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
/** Starts factd on an ephemeral port; resolves once it logs the port it listens on. */
function startFactd(name, env) {
	// factd's settings are the test's alone, whatever FACTD_ variables the caller has.
	const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FACTD_')));
	const child = spawn(factdBin, ['serve'], {
		env: { ...inherited, FACTD_LISTEN: '127.0.0.1:0', FACTD_LOG_LEVEL: 'info', ...env },
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	const inst = { name, child, log: [], exited: null };
	instances.push(inst);
	const exited = new Promise((resolve) => {
		child.on('exit', (code, signal) => resolve((inst.exited = { code, signal })));
		child.on('error', (e) => resolve((inst.exited = { code: null, signal: null, error: e.message })));
	});
	inst.exitedPromise = exited;
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`factd (${name}) did not start listening within 30 s`)), 30000);
		let buf = '';
		const onLine = (line) => {
			inst.log.push(line);
			if (inst.base) return;
			try {
				const rec = JSON.parse(line);
				if (rec.msg === 'listening' && rec.port) {
					inst.base = `http://127.0.0.1:${rec.port}`;
					clearTimeout(timer);
					resolve(inst);
				}
			} catch {
				// not a JSON log line (sanitizer output, for example); kept in the log
			}
		};
		child.stderr.on('data', (d) => {
			buf += d;
			let i;
			while ((i = buf.indexOf('\n')) >= 0) {
				onLine(buf.slice(0, i));
				buf = buf.slice(i + 1);
			}
		});
		child.stdout.on('data', (d) => inst.log.push(String(d)));
		exited.then(({ code, signal, error }) => {
			clearTimeout(timer);
			if (!inst.base) reject(new Error(error ? `cannot start ${factdBin}: ${error}` : `factd (${name}) exited before listening (code ${code}, signal ${signal})`));
		});
	});
}

async function stopFactd(inst) {
	if (inst.exited) {
		const why = inst.exited.error || `code ${inst.exited.code}, signal ${inst.exited.signal}`;
		fail(`factd (${inst.name})`, `exited before it was stopped (${why})`);
		return;
	}
	inst.child.kill('SIGTERM');
	const result = await Promise.race([inst.exitedPromise, sleep(20000).then(() => null)]);
	if (!result) {
		inst.child.kill('SIGKILL');
		fail(`factd (${inst.name})`, 'did not exit within 20 s of SIGTERM');
	} else if (result.code !== 0) {
		fail(`factd (${inst.name})`, `exited with code ${result.code}, signal ${result.signal} after SIGTERM`);
	}
}

async function waitReady(inst) {
	const deadline = Date.now() + 30000;
	for (;;) {
		try {
			const res = await send(inst.base, 'GET', '/readyz');
			if (res.status === 200) return res;
		} catch {
			// not accepting connections yet
		}
		if (Date.now() > deadline) throw new Error(`factd (${inst.name}) not ready within 30 s`);
		await sleep(100);
	}
}

// ---- steps ------------------------------------------------------------------------

let api; // the main instance
let requestSeq = 0;

/** One request and its checks.  opts: send() options plus status, type, label, requestId. */
async function call(method, reqPath, opts = {}, inst = api) {
	const { status, type, label, unknownPath, undocumentedMethod, undocumentedQuery, ...sendOpts } = opts;
	const requestId = `contract-${process.pid}-${++requestSeq}`;
	sendOpts.headers = { 'X-Request-Id': requestId, ...(sendOpts.headers || {}) };
	let res;
	try {
		res = await send(inst.base, method, reqPath, sendOpts);
	} catch (e) {
		fail(label || `${method} ${reqPath}`, `request failed: ${e.message}`);
		return { status: 0, headers: {}, body: undefined };
	}
	const echo = sendOpts.headers['X-Request-Id'] === requestId ? requestId : undefined;
	const body = checkResponse(res, { status, type, unknownPath, undocumentedMethod, requestId: echo }, label || `${method} ${reqPath}`);
	// Every query parameter a step sends is one openapi.yaml documents for the operation.
	if (sendOpts.query && !undocumentedQuery && !unknownPath && !undocumentedMethod) {
		const m = method === 'HEAD' ? ['HEAD', 'GET'] : [method];
		const ops = (findPath(reqPath.split('?')[0]) || []).filter((o) => m.includes(o.method));
		for (const name of Object.keys(sendOpts.query))
			if (ops.length && !ops.some((o) => o.query.has(name))) fail(label || `${method} ${reqPath}`, `query parameter ${name} is not documented for ${ops[0].id}`);
	}
	return { status: res.status, headers: res.headers, body };
}

const J = 'application/json';
const uuid = () => randomUUID();
const big = (n) => JSON.stringify({ padding: 'x'.repeat(n) });
const MAX_BODY = 1048576; // FACTD_MAX_BODY's default, which the main instance runs with

function sample(p) {
	return p.replace(/\{stream\}/, 'contract-sample').replace(/\{subject\}/, 'c-sample').replace(/\{product_id\}/, 'SKU-SAMPLE')
		.replace(/^\/products\/\{id\}/, '/products/SKU-SAMPLE').replace(/\{id\}/, '00000000-0000-4000-8000-000000000000');
}

async function health() {
	section = 'health';
	await call('GET', '/healthz', { status: 200 });
	await call('HEAD', '/healthz', { status: 200 });
	await call('POST', '/healthz', { status: 405, type: 'method-not-allowed', undocumentedMethod: true });
	await call('GET', '/readyz', { status: 200 });
	await call('PUT', '/readyz', { status: 405, type: 'method-not-allowed', undocumentedMethod: true });
	// An invalid X-Request-Id is replaced by a generated one.
	const r = await call('GET', '/healthz', { status: 200, headers: { 'X-Request-Id': 'not valid!' } });
	if (r.headers['x-request-id'] === 'not valid!') fail('invalid X-Request-Id', 'was echoed');
}

async function streams() {
	section = 'streams';
	const s = `contract-${process.pid}`;
	const base = `/streams/${s}/events`;
	const e1 = uuid(), e2 = uuid();
	await call('GET', base, { status: 404, type: 'not-found' });
	const events = [{ event_id: e1, type: 'ItemAdded', data: { sku: 'a', n: 1 } }, { event_id: e2, type: 'ItemRemoved', data: {}, metadata: { m: 1 } }];
	const created = await call('POST', base, { json: { expected_version: 0, events }, status: 201, headers: { 'X-Correlation-Id': 'corr-1', 'X-Causation-Id': 'cause-1' } });
	if (created.headers.location !== `${base}?from_version=1`) fail('append', `Location ${created.headers.location}`);
	await call('POST', base, { json: { expected_version: 0, events }, status: 200, label: 'idempotent repeat' });
	await call('POST', base, { json: { expected_version: 0, events: [{ type: 'X', data: {} }] }, status: 409, type: 'wrong-version' });
	await call('POST', base, { json: { expected_version: 'no_stream', events: [{ type: 'X', data: {} }] }, status: 409, type: 'wrong-version' });
	await call('POST', `/streams/${s}-other/events`, { json: { expected_version: 'exists', events: [{ type: 'X', data: {} }] }, status: 409, type: 'wrong-version' });
	await call('POST', `/streams/${s}-other/events`, { json: { expected_version: 'any', events: [{ event_id: e1, type: 'X', data: {} }] }, status: 409, type: 'duplicate-event-id' });
	await call('POST', base, { json: { expected_version: 2, events: [{ type: 'ItemAdded', data: { sku: 'b' } }] }, status: 201 });
	await call('POST', base, { json: { expected_version: 'any', events: [{ type: 'NoteAdded', data: { n: 12345678901234567890 } }] }, status: 201 });
	await call('POST', base, { json: '{"expected_version": 0, "events": [}', status: 400, type: 'invalid-json' });
	await call('POST', base, { json: '{"expected_version": 0, "expected_version": 1, "events": []}', status: 400, type: 'invalid-json' });
	await call('POST', base, { json: { expected_version: 0, events: [], extra: 1 }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: -1, events: [{ type: 'X', data: {} }] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: 'any', events: [] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: 'any', events: [{ type: '', data: {} }] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: 'any', events: [{ type: 'X', data: [] }] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: 'any', events: [{ type: 'X', data: {}, payload: 1 }] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: { expected_version: 'any', events: [{ event_id: 'nope', type: 'X', data: {} }] }, status: 400, type: 'invalid-field' });
	await call('POST', base, { json: [1], status: 400, type: 'invalid-field' });
	await call('POST', '/streams/bad!name/events', { json: { expected_version: 'any', events: [{ type: 'X', data: {} }] }, status: 400, type: 'invalid-parameter' });
	const many = Array.from({ length: 1001 }, () => ({ type: 'X', data: {} }));
	await call('POST', base, { json: { expected_version: 'any', events: many }, status: 413, type: 'too-many-events' });
	await call('POST', base, { json: big(MAX_BODY), status: 413, type: 'body-too-large', label: 'body over FACTD_MAX_BODY (Content-Length)' });
	await call('POST', base, { json: big(MAX_BODY), chunked: true, status: 413, type: 'body-too-large', label: 'body over FACTD_MAX_BODY (chunked)' });
	await call('POST', base, { body: '{}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('POST', base, { body: '{}', status: 415, type: 'unsupported-media-type', label: 'no Content-Type' });
	for (const m of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) await call(m, base, { status: 405, type: 'method-not-allowed', undocumentedMethod: true });

	const page = await call('GET', base, { status: 200 });
	if (page.headers.etag !== `"${page.body?.version}"`) fail('read stream', `ETag ${page.headers.etag}, version ${page.body?.version}`);
	const meta = page.body?.events?.[0]?.metadata || {};
	if (meta.correlation_id !== 'corr-1' || meta.causation_id !== 'cause-1' || !meta.request_id) fail('read stream', `metadata ${JSON.stringify(meta)}`);
	await call('GET', base, { query: { from_version: 2, limit: 1 }, status: 200 });
	await call('GET', base, { query: { from_version: 99 }, status: 200, label: 'past the end' });
	await call('HEAD', base, { status: 200 });
	await call('HEAD', `/streams/${s}-none/events`, { status: 404 });
	for (const query of [{ limit: 0 }, { limit: 1001 }, { limit: 'x' }, { from_version: 0 }, { from_version: 'x' }])
		await call('GET', base, { query, status: 400, type: 'invalid-parameter', label: `read stream ?${new URLSearchParams(query)}` });
	await call('GET', '/streams/bad!name/events', { status: 400, type: 'invalid-parameter' });
	return s;
}

async function feed(category) {
	section = 'feed';
	const first = await call('GET', '/events', { query: { limit: 2 }, status: 200 });
	if (first.body?.next) await call('GET', '/events', { query: { after: first.body.next }, status: 200 });
	await call('GET', '/events', { status: 200 });
	await call('GET', '/events', { query: { after: '0', category, types: 'ItemAdded,ItemRemoved' }, status: 200 });
	await call('HEAD', '/events', { status: 200 });
	for (const query of [{ after: 'garbage' }, { limit: 0 }, { limit: 1001 }, { category: 'a-b' }, { category: '' }, { types: 'a,,b' }, { types: ',' }])
		await call('GET', '/events', { query, status: 400, type: 'invalid-parameter', label: `feed ?${new URLSearchParams(query)}` });
	for (const m of ['POST', 'PUT', 'DELETE']) await call(m, '/events', { status: 405, type: 'method-not-allowed', undocumentedMethod: true });
}

/**
 * GET /events/stream never ends: read its head and body until `until(text)` holds
 * (or 10 s pass), then close it and check what arrived like any other response.
 */
function openStream(base, reqPath, { query, headers = {} } = {}, until = () => true) {
	const url = new URL(base + reqPath);
	for (const [k, v] of Object.entries(query || {})) url.searchParams.append(k, v);
	return new Promise((resolve, reject) => {
		const req = http.request(url, { method: 'GET', headers, agent: false }, (res) => {
			let text = '';
			const finish = () => {
				clearTimeout(timer);
				req.destroy();
				resolve({ method: 'GET', path: reqPath, status: res.statusCode, headers: res.headers, text });
			};
			const timer = setTimeout(finish, 10000);
			res.setEncoding('utf8');
			res.on('data', (c) => {
				text += c;
				if (res.statusCode === 200 && until(text)) finish();
			});
			res.on('end', finish);
			res.on('error', finish);
		});
		req.on('error', reject);
		req.end();
	});
}

async function liveFeed(category) {
	section = 'live feed';
	const events = (await call('GET', '/events', { query: { category }, status: 200 })).body?.events || [];
	const frames = (text) => text.split('\n\n').slice(0, -1);
	const stream = async (query, headers, until, label) => {
		const requestId = `contract-${process.pid}-${++requestSeq}`;
		let res;
		try {
			res = await openStream(api.base, '/events/stream', { query, headers: { 'X-Request-Id': requestId, ...headers } }, until);
		} catch (e) {
			fail(label, `request failed: ${e.message}`);
			return [];
		}
		checkResponse(res, { status: 200, requestId }, label);
		const got = frames(res.text);
		if (got[0] !== 'retry: 2000') fail(label, `the first frame is ${JSON.stringify(got[0])}, not the retry hint`);
		return got.slice(1);
	};
	// Catch-up: every event of the category, in feed order, as the feed has it.
	const got = await stream({ category }, {}, (t) => frames(t).length > events.length, `GET /events/stream?category=${category}`);
	if (got.length < events.length) fail('live feed catch-up', `${got.length} of ${events.length} events arrived`);
	events.forEach((e, i) => {
		const want = `id: ${e.position}\nevent: ${e.type}\ndata: `;
		if (!got[i]?.startsWith(want)) fail('live feed catch-up', `frame ${i} is ${JSON.stringify(got[i]?.slice(0, 120))}, expected ${JSON.stringify(want)}...`);
		else if (JSON.stringify(JSON.parse(got[i].slice(want.length))) !== JSON.stringify(e)) fail('live feed catch-up', `frame ${i}: data differs from GET /events`);
	});
	// Resuming: Last-Event-ID wins over ?after=.
	if (events.length >= 2) {
		const rest = await stream({ after: '0', category }, { 'Last-Event-ID': events[events.length - 2].position }, (t) => frames(t).length > 1, 'resume with Last-Event-ID');
		if (!rest[0]?.startsWith(`id: ${events[events.length - 1].position}\n`)) fail('resume with Last-Event-ID', `first frame ${JSON.stringify(rest[0]?.slice(0, 80))}`);
	}
	await call('HEAD', '/events/stream', { status: 200 });
	for (const query of [{ after: 'garbage' }, { category: 'a-b' }, { types: 'a,,b' }])
		await call('GET', '/events/stream', { query, status: 400, type: 'invalid-parameter', label: `stream ?${new URLSearchParams(query)}` });
	await call('GET', '/events/stream', { headers: { 'Last-Event-ID': 'garbage' }, status: 400, type: 'invalid-header', label: 'stream with a bad Last-Event-ID' });
	for (const m of ['POST', 'PUT', 'DELETE']) await call(m, '/events/stream', { status: 405, type: 'method-not-allowed', undocumentedMethod: true });
}

/** The errors every command shares: body, headers, size and idempotency. */
async function commandErrors(method, p, goodBody, { jsonBody = true, keyFirstUse = shopKeyFirstUse } = {}) {
	const label = (what) => `${method} ${p.replace(/[0-9a-f-]{36}/, '{id}')} ${what}`;
	if (jsonBody) {
		await call(method, p, { json: '{"a": ', status: 400, type: 'invalid-json', label: label('malformed JSON') });
		await call(method, p, { json: '', status: 400, type: 'invalid-json', label: label('no body') });
		await call(method, p, { body: JSON.stringify(goodBody), headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type', label: label('text/plain') });
	} else {
		await call(method, p, { json: '{"a": ', status: 400, type: 'invalid-json', label: label('malformed JSON') });
		await call(method, p, { body: '{}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type', label: label('text/plain body') });
	}
	await call(method, p, { json: { ...goodBody, unknown_member: 1 }, status: 400, type: 'invalid-field', label: label('unknown member') });
	await call(method, p, { json: [], status: 400, type: 'invalid-field', label: label('array body') });
	await call(method, p, { json: goodBody, headers: { 'Idempotency-Key': 'has space' }, status: 400, type: 'invalid-header', label: label('bad Idempotency-Key') });
	await call(method, p, { json: goodBody, headers: { 'If-Match': '*' }, status: 400, type: 'invalid-header', label: label('bad If-Match') });
	await call(method, p, { json: big(MAX_BODY), status: 413, type: 'body-too-large', label: label('body too large') });
	await call(method, p, { json: goodBody, headers: { 'If-Match': '"999"' }, status: 412, type: 'precondition-failed', label: label('stale If-Match') });
	// The same key with a different request (here: another body) is 422.
	const key = `contract-key-${uuid()}`;
	await keyFirstUse(key, label('key first use'));
	await call(method, p, { json: goodBody, headers: { 'Idempotency-Key': key }, status: 422, type: 'idempotency-key-reused', label: label('key reused') });
}

function shopKeyFirstUse(key, label) {
	return call('POST', '/orders', { json: { customer_id: 'key-owner' }, headers: { 'Idempotency-Key': key }, status: 201, label });
}

/** GET /{type}s/{id}, its past states and its events. */
async function aggregateReads(kind, id, missingId, invalidId) {
	const p = `/${kind}s/${id}`;
	const cur = await call('GET', p, { status: 200 });
	if (cur.headers.etag !== `"${cur.body?.version}"`) fail(`GET ${kind}`, `ETag ${cur.headers.etag}, version ${cur.body?.version}`);
	await call('HEAD', p, { status: 200 });
	await call('GET', p, { query: { version: 1 }, status: 200 });
	await call('GET', p, { query: { at: new Date(Date.now() + 60000).toISOString() }, status: 200 });
	await call('GET', p, { query: { at: '2999-01-01T05:00:00.123456789+05:00' }, status: 200, label: `GET ${kind} at a time with an offset` });
	await call('GET', p, { query: { at: '2000-01-01T00:00:00Z' }, status: 404, type: 'not-found', label: `GET ${kind} before it existed` });
	await call('GET', p, { query: { version: 9999 }, status: 404, type: 'not-found', label: `GET ${kind} no such version` });
	await call('GET', `/${kind}s/${missingId}`, { status: 404, type: 'not-found' });
	await call('GET', `/${kind}s/${invalidId}`, { status: 404, type: 'not-found', label: `GET ${kind} invalid id` });
	// ?min_position= (read-your-writes with read replicas): a position, or 0; anything else is refused.
	await call('GET', p, { query: { min_position: '0' }, status: 200, label: `GET ${kind}?min_position=0` });
	for (const query of [{ version: 0 }, { version: 'x' }, { at: 'yesterday' }, { version: 1, at: '2026-01-01T00:00:00Z' }, { min_position: 'zz' }])
		await call('GET', p, { query, status: 400, type: 'invalid-parameter', label: `GET ${kind} ?${new URLSearchParams(query)}` });
	for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) await call(m, p, { status: 405, type: 'method-not-allowed', undocumentedMethod: true });

	const ev = `${p}/events`;
	const page = await call('GET', ev, { status: 200 });
	if (page.body && page.body.stream !== `${kind}-${id}`) fail(`GET ${kind} events`, `stream ${page.body.stream}`);
	await call('GET', ev, { query: { from_version: 1, limit: 1 }, status: 200 });
	await call('HEAD', ev, { status: 200 });
	await call('GET', ev, { query: { min_position: '0' }, status: 200, label: `GET ${kind} events?min_position=0` });
	await call('GET', ev, { query: { limit: 0 }, status: 400, type: 'invalid-parameter' });
	await call('GET', ev, { query: { min_position: 'zz' }, status: 400, type: 'invalid-parameter', label: `GET ${kind} events?min_position=zz` });
	await call('GET', `/${kind}s/${missingId}/events`, { status: 404, type: 'not-found' });
	await call('GET', `/${kind}s/${invalidId}/events`, { status: 404, type: 'not-found', label: `GET ${kind} events invalid id` });
	for (const m of ['POST', 'PUT', 'DELETE']) await call(m, ev, { status: 405, type: 'method-not-allowed', undocumentedMethod: true });
}

function checkCommandResult(r, idField, what) {
	if (!r.body) return;
	if (r.headers.etag !== `"${r.body.version}"`) fail(what, `ETag ${r.headers.etag}, version ${r.body.version}`);
	if (!r.body[idField]) fail(what, `no ${idField}`);
}

async function orders() {
	section = 'orders';
	const created = await call('POST', '/orders', { json: { customer_id: 'c-1' }, status: 201 });
	checkCommandResult(created, 'order_id', 'create order');
	const id = created.body?.order_id;
	if (created.headers.location !== `/orders/${id}`) fail('create order', `Location ${created.headers.location}`);
	const own = uuid();
	await call('POST', '/orders', { json: { customer_id: 'c-2', order_id: own }, status: 201 });
	await call('POST', '/orders', { json: { customer_id: 'c-2', order_id: own }, status: 409, type: 'order-exists' });
	await call('POST', '/orders', { json: { customer_id: 'c-3', order_id: uuid() }, headers: { 'If-Match': '"0"' }, status: 201, label: 'create with If-Match "0"' });
	const key = `contract-order-${uuid()}`;
	const first = await call('POST', '/orders', { json: { customer_id: 'c-4' }, headers: { 'Idempotency-Key': key }, status: 201 });
	if (first.headers['idempotent-replayed'] !== undefined) fail('create order with a new key', 'Idempotent-Replayed on a first request');
	const again = await call('POST', '/orders', { json: { customer_id: 'c-4' }, headers: { 'Idempotency-Key': key }, status: 201, label: 'create order replay' });
	if (again.headers['idempotent-replayed'] !== 'true' || again.body?.order_id !== first.body?.order_id) fail('create order replay', `not replayed: ${JSON.stringify(again.body)}`);
	await call('POST', '/orders', { json: { customer_id: 'c-1', order_id: 'nope' }, status: 400, type: 'invalid-field' });
	await call('POST', '/orders', { json: { customer_id: '' }, status: 400, type: 'invalid-field' });
	await call('POST', '/orders', { json: {}, status: 400, type: 'invalid-field' });
	await commandErrors('POST', '/orders', { customer_id: 'c-9' });

	const lines = `/orders/${id}/lines`;
	const line = { product_id: 'SKU-1', quantity: 2, unit_price_cents: 1250 };
	checkCommandResult(await call('POST', lines, { json: line, status: 200 }), 'order_id', 'add line');
	await call('POST', lines, { json: { ...line, product_id: 'SKU-2' }, headers: { 'If-Match': '"2"' }, status: 200, label: 'add line with If-Match' });
	await call('POST', lines, { json: { ...line, unit_price_cents: 1300 }, status: 409, type: 'price-mismatch' });
	await call('POST', lines, { json: { ...line, quantity: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', lines, { json: { product_id: 'bad sku!', quantity: 1, unit_price_cents: 1 }, status: 400, type: 'invalid-field' });
	await call('POST', `/orders/${uuid()}/lines`, { json: line, status: 404, type: 'order-not-found' });
	await call('POST', '/orders/not-a-uuid/lines', { json: line, status: 404, type: 'not-found' });
	const lkey = `contract-line-${uuid()}`;
	await call('POST', lines, { json: { ...line, product_id: 'SKU-3' }, headers: { 'Idempotency-Key': lkey }, status: 200 });
	const lrep = await call('POST', lines, { json: { ...line, product_id: 'SKU-3' }, headers: { 'Idempotency-Key': lkey }, status: 200, label: 'add line replay' });
	if (lrep.headers['idempotent-replayed'] !== 'true') fail('add line replay', 'no Idempotent-Replayed: true');
	await commandErrors('POST', lines, line);

	const rm = (sku) => `/orders/${id}/lines/${sku}`;
	checkCommandResult(await call('DELETE', rm('SKU-3'), { status: 200 }), 'order_id', 'remove line');
	await call('DELETE', rm('SKU-3'), { status: 409, type: 'line-not-found' });
	await call('DELETE', rm('SKU-2'), { json: {}, status: 200, label: 'remove line with {}' });
	await call('DELETE', rm('bad!sku'), { status: 400, type: 'invalid-field' });
	await call('DELETE', `/orders/${uuid()}/lines/SKU-1`, { status: 404, type: 'order-not-found' });
	await call('DELETE', '/orders/not-a-uuid/lines/SKU-1', { status: 404, type: 'not-found' });
	await commandErrors('DELETE', rm('SKU-9'), {}, { jsonBody: false });

	const empty = (await call('POST', '/orders', { json: { customer_id: 'c-5' }, status: 201 })).body?.order_id;
	await call('POST', `/orders/${empty}/place`, { status: 409, type: 'order-empty' });
	const before = await call('GET', `/orders/${id}`, { status: 200 });
	checkCommandResult(await call('POST', `/orders/${id}/place`, { headers: { 'If-Match': `W/${before.headers.etag}` }, status: 200, label: 'place with a weak If-Match' }), 'order_id', 'place');
	await call('POST', `/orders/${id}/place`, { json: {}, status: 409, type: 'order-not-draft' });
	await call('POST', lines, { json: line, status: 409, type: 'order-not-draft' });
	await call('DELETE', rm('SKU-1'), { status: 409, type: 'order-not-draft' });
	await call('POST', `/orders/${uuid()}/place`, { status: 404, type: 'order-not-found' });
	await call('POST', '/orders/not-a-uuid/place', { status: 404, type: 'not-found' });
	await commandErrors('POST', `/orders/${empty}/place`, {}, { jsonBody: false });

	// An order is confirmed by a command without an HTTP route: append its event directly.
	const placed = await call('GET', `/orders/${id}`, { status: 200 });
	await call('POST', `/streams/order-${id}/events`, { json: { expected_version: placed.body?.version, events: [{ type: 'OrderConfirmed', data: {} }] }, status: 201, label: 'confirm order' });
	await call('POST', `/orders/${empty}/ship`, { status: 409, type: 'order-not-confirmed' });
	checkCommandResult(await call('POST', `/orders/${id}/ship`, { status: 200 }), 'order_id', 'ship');
	await call('POST', `/orders/${uuid()}/ship`, { status: 404, type: 'order-not-found' });
	await call('POST', '/orders/not-a-uuid/ship', { status: 404, type: 'not-found' });
	await commandErrors('POST', `/orders/${empty}/ship`, {}, { jsonBody: false });

	const cancel = (o) => `/orders/${o}/cancel`;
	await call('POST', cancel(id), { json: { reason: 'too late' }, status: 409, type: 'order-shipped' });
	checkCommandResult(await call('POST', cancel(empty), { json: { reason: 'changed my mind' }, status: 200 }), 'order_id', 'cancel');
	await call('POST', cancel(empty), { json: { reason: 'again' }, status: 409, type: 'order-cancelled' });
	await call('POST', cancel(empty), { json: {}, status: 400, type: 'invalid-field' });
	await call('POST', cancel(uuid()), { json: { reason: 'x' }, status: 404, type: 'order-not-found' });
	await call('POST', cancel('not-a-uuid'), { json: { reason: 'x' }, status: 404, type: 'not-found' });
	const fresh = (await call('POST', '/orders', { json: { customer_id: 'c-6' }, status: 201 })).body?.order_id;
	await commandErrors('POST', cancel(fresh), { reason: 'x' });

	const cancelled = await call('GET', `/orders/${empty}`, { status: 200 });
	if (cancelled.body?.status !== 'cancelled' || !cancelled.body?.cancel_reason) fail('GET cancelled order', JSON.stringify(cancelled.body));
	await aggregateReads('order', id, uuid(), 'not-a-uuid');
}

async function products() {
	section = 'products';
	const sku = `SKU-${process.pid}`;
	const created = await call('POST', '/products', { json: { product_id: sku, name: 'Widget', stock: 10 }, status: 201 });
	checkCommandResult(created, 'product_id', 'create product');
	if (created.headers.location !== `/products/${sku}`) fail('create product', `Location ${created.headers.location}`);
	await call('POST', '/products', { json: { product_id: sku, name: 'Widget', stock: 10 }, status: 409, type: 'product-exists' });
	await call('POST', '/products', { json: { name: 'Anonymous', stock: 0 }, status: 201, label: 'create product without id' });
	const key = `contract-product-${uuid()}`;
	await call('POST', '/products', { json: { name: 'Keyed', stock: 1 }, headers: { 'Idempotency-Key': key }, status: 201 });
	const rep = await call('POST', '/products', { json: { name: 'Keyed', stock: 1 }, headers: { 'Idempotency-Key': key }, status: 201, label: 'create product replay' });
	if (rep.headers['idempotent-replayed'] !== 'true') fail('create product replay', 'no Idempotent-Replayed: true');
	await call('POST', '/products', { json: { product_id: sku + '-2', name: 'Widget', stock: -1 }, status: 400, type: 'invalid-field' });
	await call('POST', '/products', { json: { product_id: 'bad sku', name: 'Widget', stock: 1 }, status: 400, type: 'invalid-field' });
	await commandErrors('POST', '/products', { product_id: sku + '-3', name: 'W', stock: 1 });

	const restock = `/products/${sku}/restock`;
	checkCommandResult(await call('POST', restock, { json: { quantity: 5 }, status: 200 }), 'product_id', 'restock');
	await call('POST', restock, { json: { quantity: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', '/products/SKU-NONE-' + process.pid + '/restock', { json: { quantity: 1 }, status: 404, type: 'product-not-found' });
	await call('POST', '/products/bad!sku/restock', { json: { quantity: 1 }, status: 404, type: 'not-found' });
	await commandErrors('POST', restock, { quantity: 1 });

	const p = await call('GET', `/products/${sku}`, { status: 200 });
	const b = p.body || {};
	if (b.available + b.reserved + b.committed !== b.stocked) fail('GET product', `stock does not add up: ${JSON.stringify(b)}`);
	await aggregateReads('product', sku, `SKU-NONE-${process.pid}`, 'bad!sku');
	return sku;
}

async function payments() {
	section = 'payments';
	const order = uuid();
	const created = await call('POST', '/payments', { json: { order_id: order, amount_cents: 2500 }, status: 201 });
	checkCommandResult(created, 'payment_id', 'request payment');
	const id = created.body?.payment_id;
	if (created.headers.location !== `/payments/${id}`) fail('request payment', `Location ${created.headers.location}`);
	const own = uuid();
	await call('POST', '/payments', { json: { order_id: order, amount_cents: 2500, payment_id: own }, status: 201 });
	await call('POST', '/payments', { json: { order_id: order, amount_cents: 2500, payment_id: own }, status: 409, type: 'payment-exists' });
	const key = `contract-payment-${uuid()}`;
	await call('POST', '/payments', { json: { order_id: order, amount_cents: 10 }, headers: { 'Idempotency-Key': key }, status: 201 });
	const rep = await call('POST', '/payments', { json: { order_id: order, amount_cents: 10 }, headers: { 'Idempotency-Key': key }, status: 201, label: 'request payment replay' });
	if (rep.headers['idempotent-replayed'] !== 'true') fail('request payment replay', 'no Idempotent-Replayed: true');
	await call('POST', '/payments', { json: { order_id: order, amount_cents: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', '/payments', { json: { order_id: 'x', amount_cents: 1 }, status: 400, type: 'invalid-field' });
	await commandErrors('POST', '/payments', { order_id: order, amount_cents: 1 });

	// The simulator fails each payment's first attempt (FACTD_PAYMENT_FAIL_FIRST=1).
	const proc = (p) => `/payments/${p}/process`;
	const t = await call('POST', proc(id), { status: 200, headers: { 'X-Causation-Id': 'cause-process' } });
	if (t.body?.gateway !== 'transient_failure') fail('process', `first attempt: ${JSON.stringify(t.body)}`);
	const failed = await call('GET', `/payments/${id}/events`, { query: { from_version: 2, limit: 1 }, status: 200 });
	if (failed.body?.events?.[0]?.metadata?.causation_id !== 'cause-process') fail('process', `X-Causation-Id not recorded: ${JSON.stringify(failed.body?.events?.[0]?.metadata)}`);
	// Ids in paths may be in upper case; factd answers with the lower-case id.
	const upper = await call('GET', `/payments/${id.toUpperCase()}`, { status: 200, label: 'GET payment by its upper-case id' });
	if (upper.body && upper.body.payment_id !== id) fail('GET payment by its upper-case id', `payment_id ${upper.body.payment_id}`);
	const a = await call('POST', proc(id), { json: {}, status: 200 });
	if (a.body?.gateway !== 'authorised') fail('process', `second attempt: ${JSON.stringify(a.body)}`);
	if (a.headers.etag !== `"${a.body?.version}"`) fail('process', `ETag ${a.headers.etag}`);
	await call('POST', proc(id), { status: 409, type: 'payment-not-pending' });
	const large = (await call('POST', '/payments', { json: { order_id: order, amount_cents: 200000 }, status: 201 })).body?.payment_id;
	await call('POST', proc(large), { status: 200 });
	const d = await call('POST', proc(large), { status: 200 });
	if (d.body?.gateway !== 'declined') fail('process', `over the limit: ${JSON.stringify(d.body)}`);
	await call('POST', proc(uuid()), { status: 404, type: 'payment-not-found' });
	await call('POST', proc('not-a-uuid'), { status: 404, type: 'not-found' });
	await call('POST', proc(id), { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	for (const m of ['GET', 'PUT', 'DELETE']) await call(m, proc(id), { status: 405, type: 'method-not-allowed', undocumentedMethod: true });

	const refund = (p) => `/payments/${p}/refund`;
	checkCommandResult(await call('POST', refund(id), { json: { amount_cents: 1000 }, status: 200 }), 'payment_id', 'refund');
	await call('POST', refund(id), { json: { amount_cents: 1501 }, status: 409, type: 'refund-exceeds-payment' });
	await call('POST', refund(id), { status: 200, label: 'refund the rest (no body)' });
	await call('POST', refund(id), { json: {}, status: 409, type: 'payment-not-authorised' });
	await call('POST', refund(large), { json: {}, status: 409, type: 'payment-not-authorised' });
	await call('POST', refund(id), { json: { amount_cents: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', refund(uuid()), { json: {}, status: 404, type: 'payment-not-found' });
	await call('POST', refund('not-a-uuid'), { json: {}, status: 404, type: 'not-found' });
	await commandErrors('POST', refund(large), { amount_cents: 1 }, { jsonBody: false });
	const refunded = await call('GET', `/payments/${id}`, { status: 200 });
	if (refunded.body?.status !== 'refunded') fail('GET refunded payment', JSON.stringify(refunded.body));
	// A payment of an order that exists is given back by cancelling the order, not by hand.
	const live = (await call('POST', '/orders', { json: { customer_id: 'c-refund' }, status: 201 })).body?.order_id;
	const owed = (await call('POST', '/payments', { json: { order_id: live, amount_cents: 700 }, status: 201 })).body?.payment_id;
	await call('POST', proc(owed), { status: 200, label: 'process (transient failure)' });
	await call('POST', proc(owed), { status: 200, label: 'process (authorised)' });
	await call('POST', refund(owed), { json: { amount_cents: 100 }, status: 409, type: 'order-not-cancelled' });
	await call('POST', refund(owed), { json: { amount_cents: 701 }, status: 409, type: 'refund-exceeds-payment', label: 'the payment\'s own rules first' });
	await call('POST', `/orders/${live}/cancel`, { json: { reason: 'refund test' }, status: 200 });
	await call('POST', refund(owed), { status: 200, label: 'refund once the order is cancelled' });
	await aggregateReads('payment', id, uuid(), 'not-a-uuid');
	return order;
}

/** An aggregate's stream holding only event types foreign to it is not an aggregate (but still a stream). */
async function foreignStreams() {
	section = 'foreign events';
	for (const [kind, id] of [['order', uuid()], ['product', `SKU-FOREIGN-${process.pid}`], ['payment', uuid()]]) {
		await call('POST', `/streams/${kind}-${id}/events`, { json: { expected_version: 0, events: [{ type: 'SomethingElse', data: { x: 1 } }] }, status: 201 });
		await call('GET', `/${kind}s/${id}`, { status: 404, type: 'not-found', label: `GET ${kind} whose stream has only foreign events` });
		await call('GET', `/${kind}s/${id}/events`, { status: 200, label: `GET ${kind} events, only foreign ones` });
	}
}

/**
 * An append that would break an aggregate is refused (422 event-rejected).
 * 500s: an aggregate broken behind factd's back (rows written with SQL) makes
 * reading it or sending it a command an internal error.
 */
async function brokenAggregates(dbUrl) {
	section = 'broken aggregates';
	const o = uuid(), p = `SKU-BROKEN-${process.pid}`, pay = uuid();
	const bad = [[`order-${o}`, 'order', 'OrderConfirmed', {}], [`product-${p}`, 'product', 'ProductRestocked', { quantity: 'lots' }],
		[`payment-${pay}`, 'payment', 'PaymentRefunded', { amount_cents: 5 }]];
	for (const [stream, , type, data] of bad)
		await call('POST', `/streams/${stream}/events`, { json: { expected_version: 0, events: [{ type, data }] }, status: 422, type: 'event-rejected', label: `append that would break ${stream}` });
	for (const [stream, category, type, data] of bad) {
		const d = JSON.stringify(data).replaceAll("'", "''");
		execFileSync('psql', [dbUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c',
			`INSERT INTO streams (stream_id, category, version) VALUES ('${stream}', '${category}', 1);
			 INSERT INTO events (event_id, stream_id, category, version, type, data) VALUES (gen_random_uuid(), '${stream}', '${category}', 1, '${type}', '${d}'::jsonb)`],
			{ stdio: ['ignore', 'pipe', 'pipe'] });
	}
	const steps = [
		['GET', `/orders/${o}`, {}], ['POST', '/orders', { json: { customer_id: 'c', order_id: o } }],
		['POST', `/orders/${o}/lines`, { json: { product_id: 'S', quantity: 1, unit_price_cents: 1 } }], ['DELETE', `/orders/${o}/lines/S`, {}],
		['POST', `/orders/${o}/place`, {}], ['POST', `/orders/${o}/cancel`, { json: { reason: 'r' } }], ['POST', `/orders/${o}/ship`, {}],
		['GET', `/products/${p}`, {}], ['POST', '/products', { json: { product_id: p, name: 'n', stock: 1 } }], ['POST', `/products/${p}/restock`, { json: { quantity: 1 } }],
		['GET', `/payments/${pay}`, {}], ['POST', '/payments', { json: { payment_id: pay, order_id: o, amount_cents: 1 } }],
		['POST', `/payments/${pay}/process`, {}], ['POST', `/payments/${pay}/refund`, {}],
	];
	for (const [m, path, opts] of steps) await call(m, path, { ...opts, status: 500, type: 'internal' });
	// appends to a broken aggregate's stream cannot be checked either
	await call('POST', `/streams/order-${o}/events`, { json: { expected_version: 'any', events: [{ type: 'Note', data: {} }] }, status: 500, type: 'internal', label: 'append to a broken aggregate' });
}

/**
 * Event schemas, on an instance and database of their own without projections
 * or sagas (an event newer than the code stops every follower that reads it):
 * the catalogue, an order line of schema version 1 read as stored and upcast,
 * currencies and mixed-currency, and 409 schema-too-new wherever an event
 * newer than the code is read.
 */
async function eventSchemas(dbUrl, inst) {
	section = 'event schemas';
	const cat = await call('GET', '/schema/events', { status: 200 }, inst);
	const lineType = cat.body?.types?.find((t) => t.type === 'OrderLineAdded');
	if (lineType?.version !== 2 || lineType?.upcasts?.[0]?.from !== 1 || lineType?.upcasts?.[0]?.to !== 2) fail('catalogue', JSON.stringify(lineType));
	const o = (await call('POST', '/orders', { json: { customer_id: 'c-schema' }, status: 201 }, inst)).body?.order_id;
	await call('POST', `/streams/order-${o}/events`, { json: { expected_version: 1, events: [{ type: 'OrderLineAdded', data: { product_id: 'S', quantity: 2, unit_price_cents: 100 } }] }, status: 201, label: 'an order line of schema version 1' }, inst);
	await call('POST', `/orders/${o}/lines`, { json: { product_id: 'T', quantity: 1, unit_price_cents: 100, currency: 'USD' }, status: 200 }, inst);
	await call('POST', `/orders/${o}/lines`, { json: { product_id: 'U', quantity: 1, unit_price_cents: 1, currency: 'usd' }, status: 400, type: 'invalid-field' }, inst);
	const order = await call('GET', `/orders/${o}`, { status: 200 }, inst);
	if (order.body?.lines?.[0]?.currency !== 'EUR' || order.body?.lines?.[1]?.currency !== 'USD' || order.body?.currency !== undefined) fail('order with currencies', JSON.stringify(order.body));
	await call('POST', `/orders/${o}/place`, { status: 409, type: 'mixed-currency' }, inst);
	const raw = await call('GET', `/streams/order-${o}/events`, { status: 200 }, inst);
	if (raw.body?.events?.[1]?.data?.unit_price_cents !== 100) fail('read as stored', JSON.stringify(raw.body?.events?.[1]));
	const up = await call('GET', `/streams/order-${o}/events`, { query: { upcast: 'true' }, status: 200 }, inst);
	const e = up.body?.events?.[1];
	if (e?.data?.unit_price?.currency !== 'EUR' || e?.metadata?.schema_version !== 2) fail('read upcast', JSON.stringify(e));
	await call('GET', `/orders/${o}/events`, { query: { upcast: 'true' }, status: 200 }, inst);
	await call('GET', '/events', { query: { category: 'order', types: 'OrderLineAdded', upcast: 'true' }, status: 200 }, inst);
	for (const p of [`/streams/order-${o}/events`, `/orders/${o}/events`, '/events'])
		await call('GET', p, { query: { upcast: 'yes' }, status: 400, type: 'invalid-parameter', label: `GET ${p}?upcast=yes` }, inst);
	await call('POST', `/streams/order-${o}/events`, { json: { expected_version: 'any', events: [{ type: 'OrderLineAdded', data: {}, metadata: { schema_version: 9 } }] }, status: 409, type: 'schema-too-new' }, inst);
	await call('POST', `/streams/order-${o}/events`, { json: { expected_version: 'any', events: [{ type: 'X', data: {}, metadata: { schema_version: 0 } }] }, status: 400, type: 'invalid-field' }, inst);

	// Events written by newer code sharing the database.
	const sku = `SKU-NEWER-${process.pid}`;
	await call('POST', '/products', { json: { product_id: sku, name: 'n', stock: 1 }, status: 201 }, inst);
	const pay = (await call('POST', '/payments', { json: { order_id: o, amount_cents: 5 }, status: 201 }, inst)).body?.payment_id;
	for (const [stream, category, type] of [[`order-${o}`, 'order', 'OrderLineAdded'], [`product-${sku}`, 'product', 'ProductRestocked'], [`payment-${pay}`, 'payment', 'PaymentRefunded']])
		execFileSync('psql', [dbUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c',
			`UPDATE streams SET version = version + 1 WHERE stream_id = '${stream}';
			 INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)
			 SELECT gen_random_uuid(), '${stream}', '${category}', version, '${type}', '{"future": true}', '{"schema_version": 9}' FROM streams WHERE stream_id = '${stream}'`],
			{ stdio: ['ignore', 'pipe', 'pipe'] });
	const tooNew = { status: 409, type: 'schema-too-new' };
	for (const [kind, id] of [['order', o], ['product', sku], ['payment', pay]]) {
		await call('GET', `/${kind}s/${id}`, tooNew, inst);
		await call('GET', `/${kind}s/${id}/events`, { query: { upcast: 'true' }, ...tooNew }, inst);
		await call('GET', `/${kind}s/${id}/events`, { status: 200, label: `GET ${kind} events as stored, one newer than the code` }, inst);
	}
	await call('GET', `/streams/order-${o}/events`, { query: { upcast: 'true' }, ...tooNew }, inst);
	await call('POST', `/orders/${o}/lines`, { json: { product_id: 'V', quantity: 1, unit_price_cents: 1 }, ...tooNew }, inst);
	await call('POST', `/products/${sku}/restock`, { json: { quantity: 1 }, ...tooNew }, inst);
	// the feed shows the events once every older transaction has ended
	for (let i = 0; i < 100; i++) {
		const r = await call('GET', '/events', { query: { category: 'payment', upcast: 'true' }, status: [200, 409], label: 'the feed upcast, an event newer than the code' }, inst);
		if (r.status === 409) break;
		await sleep(100);
	}
	// now visible: a live stream that would start with it is refused before it starts
	await call('GET', '/events/stream', { query: { category: 'payment', upcast: 'true' }, ...tooNew }, inst);
}

/** Data lifecycle: deleting and truncating streams, retention policies, with their errors. */
async function lifecycle() {
	section = 'lifecycle';
	const append = (s, expected = 'any', status = 201, type) =>
		call('POST', `/streams/${s}/events`, { json: { expected_version: expected, events: [{ type: 'Kept', data: { n: 1 } }] }, status, type });
	for (let i = 0; i < 3; i++) await append('life-1');
	await call('DELETE', '/streams/life-1', { query: { expected_version: '1' }, status: 409, type: 'wrong-version' });
	await call('DELETE', '/streams/life-1', { query: { expected_version: 'x' }, status: 400, type: 'invalid-parameter' });
	await call('DELETE', '/streams/life-1', { query: { hard: 'yes' }, status: 400, type: 'invalid-parameter' });
	await call('DELETE', '/streams/bad$name', { status: 400, type: 'invalid-parameter' });
	const del = await call('DELETE', '/streams/life-1', { query: { expected_version: '3' }, status: 200 });
	if (del.body?.deleted_version !== 4 || del.body?.hard !== false) fail('soft delete', JSON.stringify(del.body));
	await call('GET', '/streams/life-1/events', { status: 404, type: 'stream-deleted' });
	await call('DELETE', '/streams/life-1', { status: 404, type: 'stream-deleted' });
	await call('DELETE', '/streams/life-never', { status: 404, type: 'not-found' });
	await append('life-1', 'exists', 409, 'wrong-version');
	await append('life-1', 'no_stream');
	await append('life-1');
	const tr = await call('POST', '/streams/life-1/truncate', { json: { before_version: 6 }, status: 200 });
	if (tr.body?.removed !== 5) fail('truncate', JSON.stringify(tr.body));
	await call('POST', '/streams/life-1/truncate', { json: { before_version: 99 }, status: 409, type: 'truncate-beyond-end' });
	await call('POST', '/streams/life-1/truncate', { json: { before: 1 }, status: 400, type: 'invalid-field' });
	await call('POST', '/streams/life-1/truncate', { json: { before_version: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', '/streams/life-1/truncate', { json: '{"before_version": ', status: 400, type: 'invalid-json' });
	await call('POST', '/streams/life-1/truncate', { body: '{"before_version":1}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('POST', '/streams/life-1/truncate', { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	await call('POST', '/streams/life-never/truncate', { json: { before_version: 1 }, status: 404, type: 'not-found' });
	const hard = await call('DELETE', '/streams/life-1', { query: { hard: 'true' }, status: 200 });
	if (hard.body?.hard !== true || hard.body?.removed !== 1) fail('hard delete', JSON.stringify(hard.body));
	await call('GET', '/streams/life-1/events', { status: 410, type: 'stream-tombstoned' });
	await append('life-1', 'any', 410, 'stream-tombstoned');
	await call('DELETE', '/streams/life-1', { status: 410, type: 'stream-tombstoned' });
	await call('POST', '/streams/life-1/truncate', { json: { before_version: 1 }, status: 410, type: 'stream-tombstoned' });
	// the catalog: deleted and tombstoned streams only with deleted=true, each with its state
	await append('life-2');
	await call('DELETE', '/streams/life-2', { status: 200 });
	const live = await call('GET', '/streams', { query: { prefix: 'life-' }, status: 200, label: 'GET /streams without the deleted' });
	if ((live.body?.streams || []).some((x) => x.stream === 'life-1' || x.stream === 'life-2' || 'state' in x)) fail('GET /streams lists deleted streams', JSON.stringify(live.body));
	const gone = await call('GET', '/streams', { query: { prefix: 'life-', deleted: 'true' }, status: 200, label: 'GET /streams?deleted=true' });
	const stateOf = (n) => (gone.body?.streams || []).find((x) => x.stream === n)?.state;
	if (stateOf('life-1') !== 'tombstoned' || stateOf('life-2') !== 'deleted') fail('GET /streams?deleted=true', JSON.stringify(gone.body));
	await call('GET', '/streams', { query: { deleted: 'false', prefix: 'life-' }, status: 200, label: 'GET /streams?deleted=false' });
	await call('GET', '/streams', { query: { deleted: 'yes' }, status: 400, type: 'invalid-parameter', label: 'GET /streams?deleted=yes' });
	const lifeCats = await call('GET', '/categories', { status: 200, label: 'GET /categories without deleted streams' });
	if ((lifeCats.body?.categories || []).some((x) => x.category === 'life')) fail('GET /categories counts deleted streams', JSON.stringify(lifeCats.body));
	// an aggregate's stream: snapshotted first, so it still loads
	const o = (await call('POST', '/orders', { json: { customer_id: 'c-life' }, status: 201 })).body?.order_id;
	await call('POST', `/orders/${o}/lines`, { json: { product_id: 'SKU-LIFE', quantity: 2, unit_price_cents: 300 }, status: 200 });
	await call('POST', `/streams/order-${o}/truncate`, { json: { before_version: 3 }, status: 200 });
	const ord = await call('GET', `/orders/${o}`, { status: 200 });
	if (ord.body?.lines?.length !== 1) fail('truncated order', JSON.stringify(ord.body));

	await call('GET', '/retention/audit', { status: 404, type: 'not-found' });
	await call('GET', '/retention/bad-category', { status: 400, type: 'invalid-parameter' });
	const put = await call('PUT', '/retention/audit', { json: { max_age_days: 90 }, status: 200 });
	if (put.body?.max_age_days !== 90 || put.body?.category !== 'audit') fail('put retention', JSON.stringify(put.body));
	await call('PUT', '/retention/audit', { json: { max_age_days: 30, max_count_per_stream: 1000 }, status: 200 });
	await call('PUT', '/retention/audit', { json: {}, status: 400, type: 'invalid-field' });
	await call('PUT', '/retention/audit', { json: { max_age_days: 0 }, status: 400, type: 'invalid-field' });
	await call('PUT', '/retention/audit', { json: { max_count_per_stream: 'many' }, status: 400, type: 'invalid-field' });
	await call('PUT', '/retention/audit', { json: { keep: 1 }, status: 400, type: 'invalid-field' });
	await call('PUT', '/retention/bad-category', { json: { max_age_days: 1 }, status: 400, type: 'invalid-parameter' });
	await call('PUT', '/retention/audit', { body: '{"max_age_days":1}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('PUT', '/retention/audit', { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	const got = await call('GET', '/retention/audit', { status: 200 });
	if (got.body?.max_count_per_stream !== 1000) fail('get retention', JSON.stringify(got.body));
	const list = await call('GET', '/retention', { status: 200 });
	if (!list.body?.policies?.some((p) => p.category === 'audit')) fail('list retention', JSON.stringify(list.body));
	await call('DELETE', '/retention/audit', { status: 204 });
	await call('DELETE', '/retention/audit', { status: 404, type: 'not-found' });
	await call('DELETE', '/retention/bad-category', { status: 400, type: 'invalid-parameter' });
}

/** The read models: lists with their parameter errors, projection status and rebuild. */
async function readModels() {
	section = 'read models';
	await call('GET', '/orders', { query: { limit: '5' }, status: 200 });
	await call('GET', '/orders', { query: { status: 'bogus' }, status: 400, type: 'invalid-parameter' });
	await call('GET', '/orders', { query: { limit: '0' }, status: 400, type: 'invalid-parameter' });
	await call('GET', '/products', { query: { limit: '5' }, status: 200 });
	await call('GET', '/products', { query: { after: 'not a sku' }, status: 400, type: 'invalid-parameter' });
	await call('GET', '/projections', { status: 200 });
	await call('POST', '/projections/nope/rebuild', { status: 404, type: 'not-found' });
	await call('POST', '/projections/product_stock/rebuild', { status: 202 });
}

/** Every GET operation without parameters in its path answers 200 (so a new one is exercised at least so far). */
async function simpleGets() {
	section = 'simple GETs';
	const endless = (o) => Boolean(o.op.responses?.['200']?.content?.['text/event-stream']);
	for (const o of operations.filter((o) => o.method === 'GET' && !o.path.includes('{') && !endless(o))) await call('GET', o.path, { status: 200, label: `GET ${o.path}` });
}

/** Concurrent bursts for the statuses that need a race; best effort. */
async function races(order, sku, busy) {
	section = 'races';
	for (let round = 0; round < 5 && !coverage.get('processPayment').has('412'); round++) {
		const p = (await call('POST', '/payments', { json: { order_id: order, amount_cents: 100 }, status: 201 })).body?.payment_id;
		await Promise.all(Array.from({ length: 12 }, () => call('POST', `/payments/${p}/process`, { status: [200, 409, 412], label: 'concurrent process' })));
	}
	for (let round = 0; round < 5 && !coverage.get('restockProduct').has('409'); round++)
		await Promise.all(Array.from({ length: 12 }, () => call('POST', `/products/${sku}/restock`, { json: { quantity: 1 }, status: [200, 409], label: 'concurrent restock' }, busy)));
}

/** Every documented path with sample parameters and every method: undocumented ones must be 405. */
async function routeProbes(moreUnknown = []) {
	section = 'routes';
	const table = (f) => {
		const rows = [...readFileSync(f, 'utf8').matchAll(/\.method\s*=\s*"([A-Z]+)"\s*,\s*\.pattern\s*=\s*"([^"]+)"/g)].map((m) => [m[1], m[2]]);
		if (!rows.length) fail(f, 'no routes found in the route table');
		return rows;
	};
	const real = routesFiles.flatMap(table);
	// Every route must be documented; a document of one app's operations (documentsFramework false) only the app's.
	const mustDocument = APP.documentsFramework ? real : table(appRoutes);
	for (const [m, p] of mustDocument)
		if (!operations.some((o) => o.method === m && o.path === p)) fail('route table', `factd routes ${m} ${p}, which ${path.relative(root, specFile)} does not document`);
	for (const o of operations)
		if (!real.some(([m, p]) => m === o.method && p === o.path)) fail('route table', `openapi.yaml documents ${o.method} ${o.path}, which factd does not route`);
	const paths = [...new Set(operations.map((o) => o.path))];
	for (const p of paths) {
		const documented = new Set(operations.filter((o) => o.path === p).map((o) => o.method));
		for (const m of PROBE_METHODS.filter((m) => !documented.has(m)))
			await call(m, sample(p), { status: 405, type: 'method-not-allowed', undocumentedMethod: true, label: `probe ${m} ${p}` });
	}
	const unknown = ['/', '/nope', '/streams/x/y', '/streams/x/events/1', '/events/1', '/orders/00000000-0000-4000-8000-000000000000/confirm',
		'/orders/00000000-0000-4000-8000-000000000000/lines', '/products/x/reserve', '/payments/00000000-0000-4000-8000-000000000000/authorise',
		'/healthz/', '/HEALTHZ', ...moreUnknown];
	for (const p of unknown) {
		if (findPath(p)) continue;
		for (const m of ['GET', 'POST']) await call(m, p, { status: 404, type: 'not-found', unknownPath: true, label: `probe ${m} ${p}` });
	}
}

/**
 * Sagas, on an instance of their own (its own database, so its sagas change no
 * order the other steps use) whose payment gateway never answers: take_payment
 * then waits for its timeout and the order's saga stays running until aborted.
 */
async function sagas(inst) {
	section = 'sagas';
	const c = (m, p, opts = {}) => call(m, p, opts, inst);
	const sku = `SKU-SAGA-${process.pid}`, scarce = `SKU-SAGA-SCARCE-${process.pid}`;
	await c('POST', '/products', { json: { product_id: sku, name: 'Saga widget', stock: 10 }, status: 201 });
	await c('POST', '/products', { json: { product_id: scarce, name: 'Scarce widget', stock: 1 }, status: 201 });
	const place = async (product, quantity) => {
		const id = (await c('POST', '/orders', { json: { customer_id: 'c-saga' }, status: 201 })).body?.order_id;
		await c('POST', `/orders/${id}/lines`, { json: { product_id: product, quantity, unit_price_cents: 250 }, status: 200 });
		await c('POST', `/orders/${id}/place`, { status: 200 });
		return id;
	};
	/** Polls the order's saga (404 until factd has taken in OrderPlaced) until `ok` holds. */
	const waitSaga = async (order, ok, what, ms = 60000) => {
		const deadline = Date.now() + ms;
		for (;;) {
			const r = await c('GET', `/orders/${order}/saga`, { status: [200, 404], label: `poll the saga of order ${order}` });
			if (r.status === 200 && ok(r.body)) return r.body;
			if (Date.now() > deadline) {
				fail(`saga of order ${order}`, `not ${what} within ${ms / 1000} s: ${JSON.stringify(r.body)}`);
				return r.body || {};
			}
			await sleep(200);
		}
	};
	const waiting = (s) => s.status === 'running' && s.phase === 'waiting' && s.current_step === 'take_payment';
	const history = (s) => (s.history || []).map((h) => `${h.step}:${h.kind}:${h.outcome}`).join(',');

	// An order that reserves its stock and then waits for the payment's answer.
	const a = await place(sku, 2);
	let s = await waitSaga(a, waiting, 'waiting for the payment');
	const sid = s.id;
	if (s.type !== 'order_fulfillment' || s.correlation_key !== a) fail('order saga', `type ${s.type}, key ${s.correlation_key}`);
	if (history(s) !== 'accept_order:action:succeeded,reserve_inventory:action:succeeded,take_payment:action:waiting')
		fail('order saga', `history ${history(s)}`);
	if ((s.steps || []).map((x) => `${x.name}:${x.status}`).join() !== 'accept_order:succeeded,reserve_inventory:succeeded,take_payment:waiting,confirm_order:not_started')
		fail('order saga', `steps ${JSON.stringify(s.steps)}`);
	const one = await c('GET', `/sagas/${sid}`, { status: 200 });
	if (one.body?.id !== sid) fail('GET saga', `id ${one.body?.id}`);
	const upper = await c('GET', `/sagas/${sid.toUpperCase()}`, { status: 200, label: 'GET saga by its upper-case id' });
	if (upper.body?.id !== sid) fail('GET saga by its upper-case id', `id ${upper.body?.id}`);
	await c('GET', `/orders/${a.toUpperCase()}/saga`, { status: 200, label: 'GET the saga of an order by its upper-case id' });

	// Out of stock: reserve_inventory fails and the saga compensates at once.
	const b = await place(scarce, 3);
	const sb = await waitSaga(b, (x) => x.status === 'compensated', 'compensated');
	if (!/insufficient-stock/.test(sb.error || '')) fail('out of stock', `error ${sb.error}`);
	if (history(sb) !== 'accept_order:action:succeeded,reserve_inventory:action:failed,reserve_inventory:compensation:succeeded,accept_order:compensation:succeeded')
		fail('out of stock', `history ${history(sb)}`);
	const ob = await c('GET', `/orders/${b}`, { status: 200 });
	if (ob.body?.status !== 'cancelled') fail('out of stock', `order ${JSON.stringify(ob.body)}`);

	// Lists, their filters and pages.
	const all = await c('GET', '/sagas', { status: 200 });
	if ((all.body?.items || []).map((x) => x.id).join() !== [sb.id, sid].join()) fail('GET /sagas', `newest first: ${JSON.stringify(all.body)}`);
	const p1 = await c('GET', '/sagas', { query: { limit: '1' }, status: 200 });
	if (p1.body?.next !== sb.id) fail('GET /sagas?limit=1', `next ${p1.body?.next}`);
	const p2 = await c('GET', '/sagas', { query: { limit: '1', after: p1.body?.next || sb.id }, status: 200 });
	if (p2.body?.items?.[0]?.id !== sid || p2.body?.next !== null) fail('GET /sagas, second page', JSON.stringify(p2.body));
	const running = await c('GET', '/sagas', { query: { type: 'order_fulfillment', status: 'running' }, status: 200 });
	if ((running.body?.items || []).map((x) => x.id).join() !== sid) fail('GET /sagas?status=running', JSON.stringify(running.body));
	await c('GET', '/sagas', { query: { status: 'compensated' }, status: 200 });
	await c('GET', '/sagas', { query: { type: 'order_shipping' }, status: 200 });
	await c('HEAD', '/sagas', { status: 200 });
	for (const query of [{ type: 'nope' }, { status: 'bogus' }, { limit: '0' }, { limit: 'x' }, { limit: '1001' }, { after: 'nope' }, { after: uuid() }])
		await c('GET', '/sagas', { query, status: 400, type: 'invalid-parameter', label: `GET /sagas?${new URLSearchParams(query)}` });

	// Unknown sagas, orders without one.
	await c('GET', `/sagas/${uuid()}`, { status: 404, type: 'not-found' });
	await c('GET', '/sagas/not-a-uuid', { status: 404, type: 'not-found' });
	await c('GET', `/orders/${uuid()}/saga`, { status: 404, type: 'not-found', label: 'GET the saga of an unknown order' });
	await c('GET', '/orders/not-a-uuid/saga', { status: 404, type: 'not-found' });
	const draft = (await c('POST', '/orders', { json: { customer_id: 'c-saga' }, status: 201 })).body?.order_id;
	await c('GET', `/orders/${draft}/saga`, { status: 404, type: 'not-found', label: 'GET the saga of a draft order' });

	// Operators: retry is for failed sagas only, abort for running ones.
	const r409 = await c('POST', `/sagas/${sid}/retry`, { status: 409, type: 'saga-state' });
	if (r409.body?.saga_status !== 'running') fail('retry a running saga', JSON.stringify(r409.body));
	const ab = await c('POST', `/sagas/${sid}/abort`, { status: 202 });
	if (ab.body?.id !== sid || !['compensating', 'compensated'].includes(ab.body?.status)) fail('abort', JSON.stringify(ab.body));
	s = await waitSaga(a, (x) => x.status === 'compensated', 'compensated');
	if (s.error !== 'aborted by an operator') fail('abort', `error ${s.error}`);
	const undo = (s.history || []).filter((h) => h.kind === 'compensation').map((h) => `${h.step}:${h.outcome}`).join();
	if (undo !== 'take_payment:succeeded,reserve_inventory:succeeded,accept_order:succeeded') fail('abort', `compensations not in reverse order: ${undo}`);
	const oa = await c('GET', `/orders/${a}`, { status: 200 });
	if (oa.body?.status !== 'cancelled' || oa.body?.cancel_reason !== 'aborted by an operator') fail('abort', `order ${JSON.stringify(oa.body)}`);
	for (const op of ['abort', 'retry']) {
		const r = await c('POST', `/sagas/${sid}/${op}`, { status: 409, type: 'saga-state', label: `${op} a compensated saga` });
		if (r.body?.saga_status !== 'compensated') fail(`${op} a compensated saga`, JSON.stringify(r.body));
	}
	for (const op of ['abort', 'retry']) {
		await c('POST', `/sagas/${uuid()}/${op}`, { status: 404, type: 'not-found' });
		await c('POST', `/sagas/not-a-uuid/${op}`, { status: 404, type: 'not-found' });
	}

	// A compensation that cannot complete: the order is confirmed (an event appended
	// behind the saga's back) and shipped, so cancelling it (the first thing undoing
	// take_payment does, before any money goes back) is refused and the saga fails;
	// an operator's retry runs the compensation again (and it fails again).
	const d = await place(sku, 1);
	const sd = await waitSaga(d, waiting, 'waiting for the payment');
	await c('POST', `/streams/order-${d}/events`, { json: { expected_version: 'any', events: [{ type: 'OrderConfirmed', data: {} }] }, status: 201, label: 'confirm the order behind the saga' });
	await c('POST', `/orders/${d}/ship`, { status: 200 });
	await c('POST', `/sagas/${sd.id}/abort`, { status: 202 });
	await waitSaga(d, (x) => x.status === 'failed', 'failed');
	const fa = await c('POST', `/sagas/${sd.id}/abort`, { status: 409, type: 'saga-state', label: 'abort a failed saga' });
	if (fa.body?.saga_status !== 'failed') fail('abort a failed saga', JSON.stringify(fa.body));
	const rt = await c('POST', `/sagas/${sd.id}/retry`, { status: 202 });
	if (!['compensating', 'failed'].includes(rt.body?.status)) fail('retry a failed saga', JSON.stringify(rt.body));
	const sd2 = await waitSaga(d, (x) => x.status === 'failed' && (x.history || []).filter((h) => h.step === 'take_payment' && h.kind === 'compensation').length >= 2, 'failed again');
	if (!/order-shipped/.test(sd2.error || '')) fail('retry a failed saga', `error ${sd2.error}`);
	// Shipping started the order's order_shipping saga.
	const deadline = Date.now() + 60000;
	for (;;) {
		const sh = await c('GET', '/sagas', { query: { type: 'order_shipping' }, status: 200 });
		const mine = (sh.body?.items || []).find((x) => x.correlation_key === d);
		if (mine?.status === 'completed') {
			await c('GET', `/sagas/${mine.id}`, { status: 200, label: 'GET an order_shipping saga' });
			break;
		}
		if (Date.now() > deadline) {
			fail('order_shipping', `no completed saga for order ${d}: ${JSON.stringify(sh.body)}`);
			break;
		}
		await sleep(200);
	}
}

/** Streams and categories (keyset pages and filters), the feed head, the caller's role, the app, the console's files. */
async function catalog(stream) {
	section = 'catalog';
	const category = stream.split('-')[0];
	for (let i = 0; i < 3; i++)
		await call('POST', `/streams/${category}-page-${i}/events`, { json: { expected_version: 0, events: [{ type: 'Paged', data: { i } }] }, status: 201, label: 'a stream to page over' });
	const all = await call('GET', '/streams', { query: { category }, status: 200 });
	const names = (all.body?.streams || []).map((x) => x.stream);
	if (names.length < 4 || names.some((n) => n !== category && !n.startsWith(`${category}-`))) fail('GET /streams?category', JSON.stringify(names));
	if ([...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).join() !== names.join()) fail('GET /streams?category', `not in byte order: ${names}`);
	const first = await call('GET', '/streams', { query: { category, limit: '2' }, status: 200 });
	if (first.body?.next !== names[1]) fail('GET /streams?limit=2', `next ${first.body?.next}, expected ${names[1]}`);
	const second = await call('GET', '/streams', { query: { category, limit: '2', after: first.body?.next || names[1] }, status: 200 });
	if (second.body?.streams?.[0]?.stream !== names[2]) fail('GET /streams, second page', JSON.stringify(second.body));
	const pre = await call('GET', '/streams', { query: { prefix: `${category}-page-` }, status: 200 });
	if ((pre.body?.streams || []).length !== 3 || pre.body?.next !== null) fail('GET /streams?prefix', JSON.stringify(pre.body));
	const mine = (all.body?.streams || []).find((x) => x.stream === stream);
	if (!mine || mine.category !== category || mine.version < 1) fail('GET /streams', `${stream}: ${JSON.stringify(mine)}`);
	await call('GET', '/streams', { query: { prefix: 'no-such-prefix-' }, status: 200, label: 'GET /streams, nothing matches' });
	await call('HEAD', '/streams', { status: 200 });
	for (const query of [{ category: 'a-b' }, { category: '' }, { prefix: '' }, { prefix: 'a b' }, { after: 'a/b' }, { limit: '0' }, { limit: '1001' }, { deleted: '1' }, { deleted: '' }])
		await call('GET', '/streams', { query, status: 400, type: 'invalid-parameter', label: `GET /streams?${new URLSearchParams(query)}` });

	await call('POST', `/streams/catalog-${process.pid}/events`, { json: { expected_version: 0, events: [{ type: 'Paged', data: {} }] }, status: 201, label: 'a stream of another category' });
	const cats = await call('GET', '/categories', { status: 200 });
	const c = (cats.body?.categories || []).find((x) => x.category === category);
	if (!c || c.streams !== names.length) fail('GET /categories', `${category}: ${JSON.stringify(c)}, ${names.length} streams listed`);
	const c1 = await call('GET', '/categories', { query: { limit: '1' }, status: 200 });
	if (c1.body?.next) {
		const c2 = await call('GET', '/categories', { query: { limit: '1', after: c1.body.next }, status: 200 });
		if (c2.body?.categories?.[0]?.category === c1.body.next) fail('GET /categories, second page', JSON.stringify(c2.body));
	} else fail('GET /categories?limit=1', `no next: ${JSON.stringify(c1.body)}`);
	for (const query of [{ after: 'a-b' }, { limit: 'x' }])
		await call('GET', '/categories', { query, status: 400, type: 'invalid-parameter', label: `GET /categories?${new URLSearchParams(query)}` });

	const head = await call('GET', '/events/head', { status: 200 });
	const tail = await call('GET', '/events', { query: { after: head.body?.head || '0' }, status: 200, label: 'the feed after its head' });
	if ((tail.body?.events || []).length) fail('GET /events/head', `events after the head: ${tail.text?.slice?.(0, 200)}`);
	const who = await call('GET', '/whoami', { status: 200 });
	if (who.body?.role !== 'admin' || who.body?.keys_required !== false) fail('GET /whoami without keys', JSON.stringify(who.body));
	const described = await call('GET', '/app', { status: 200 });
	const order = (described.body?.aggregates || []).find((a) => a.name === 'order');
	if (order?.state_path !== '/orders/{id}' || order?.saga_type !== 'order_fulfillment') fail('GET /app', JSON.stringify(order));

	const page = await call('GET', '/console', { status: 200 });
	const csp = page.headers['content-security-policy'] || '';
	if (!/script-src 'self'/.test(csp)) fail('GET /console', `Content-Security-Policy ${csp}`);
	const js = await call('GET', '/console/console.js', { status: 200 });
	await call('GET', '/console/console.js', { headers: { 'If-None-Match': js.headers.etag }, status: 304, label: 'GET /console/console.js, current copy' });
	await call('GET', '/console', { headers: { 'If-None-Match': page.headers.etag }, status: 304, label: 'GET /console, current copy' });
	await call('GET', '/console/console.css', { headers: { 'If-None-Match': '"stale"' }, status: 200, label: 'GET /console/console.css, stale copy' });
	await call('GET', '/console/nope.js', { status: 404, type: 'not-found' });
	await call('HEAD', '/console/index.html', { status: 200 });
}

let keyDir = null;

/** Personal data: orders and stream events that declare it, data subjects and their erasure. */
async function subjects(noKey, keyed) {
	section = 'personal data';
	const customer = `c-personal-${process.pid}`;
	const address = { name: 'Ann Example', street: '1 Sealed Street', city: 'Lyon', postal_code: '69001', country: 'FR' };
	const created = await call('POST', '/orders', { json: { customer_id: customer, email: 'ann@example.org', shipping_address: address }, status: 201 });
	const order = created.body?.order_id;
	const before = await call('GET', `/orders/${order}`, { status: 200 });
	if (before.body?.email !== 'ann@example.org' || before.body?.shipping_address?.street !== address.street || before.body?.erased)
		fail('GET the order with personal data', JSON.stringify(before.body));
	await call('POST', '/orders', { json: { customer_id: customer, email: 'not-an-address' }, status: 400, type: 'invalid-field' });
	await call('POST', '/orders', { json: { customer_id: 'c-2', email: 'ann@example.org' }, status: 422, type: 'master-key-missing', label: 'an order with an email, no master key' }, noKey);
	const stream = `person-${process.pid}`;
	const personal = { subject: customer, paths: ['/email'] };
	await call('POST', `/streams/${stream}/events`, { json: { expected_version: 'no_stream', events: [{ type: 'Registered', data: { email: 'ann@example.org', plan: 'gold' }, metadata: { personal } }] }, status: 201 });
	await call('POST', `/streams/${stream}/events`, { json: { expected_version: 'any', events: [{ type: 'Registered', data: { plan: 'gold' }, metadata: { personal } }] }, status: 400, type: 'invalid-field', label: 'a personal path naming nothing' });
	await call('POST', `/streams/${stream}-2/events`, { json: { expected_version: 'any', events: [{ type: 'Registered', data: { email: 'x@y.z' }, metadata: { personal } }] }, status: 422, type: 'master-key-missing', label: 'personal data, no master key' }, noKey);
	const s = await call('GET', `/subjects/${customer}`, { status: 200 });
	if (s.body?.erased !== false || s.body?.streams?.length !== 2) fail(`GET /subjects/${customer}`, JSON.stringify(s.body));
	await call('GET', '/subjects/nobody-known', { status: 404, type: 'subject-not-found' });
	await call('GET', '/subjects/not%20an%20id', { status: 400, type: 'invalid-parameter' });
	await call('DELETE', '/subjects/not%20an%20id', { status: 400, type: 'invalid-parameter' });
	await call('GET', `/subjects/${customer}`, { headers: bearer(KEYS.write), status: 403, type: 'forbidden', label: 'GET /subjects with too small a role' }, keyed);
	const erased = await call('DELETE', `/subjects/${customer}`, { status: 204 });
	if (!erased.headers['x-position']) fail('DELETE /subjects', 'no X-Position');
	await call('DELETE', `/subjects/${customer}`, { status: 204, label: 'DELETE /subjects again' });
	const after = await call('GET', `/orders/${order}`, { status: 200, label: 'GET the order after erasure' });
	if (after.body?.email !== null || after.body?.shipping_address !== null || !after.body?.erased?.includes('/email'))
		fail('GET the order after erasure', JSON.stringify(after.body));
	const evs = await call('GET', `/streams/${stream}/events`, { status: 200, label: 'read the stream after erasure' });
	const ev = evs.body?.events?.[0];
	if (ev?.data?.email !== null || ev?.erased?.[0] !== '/email' || ev?.data?.plan !== 'gold') fail('stream after erasure', JSON.stringify(ev));
	await call('POST', '/orders', { json: { customer_id: customer, email: 'ann@example.org' }, status: 409, type: 'subject-erased' });
	await call('POST', `/streams/${stream}/events`, { json: { expected_version: 'any', events: [{ type: 'Registered', data: { email: 'a@b.c' }, metadata: { personal } }] }, status: 409, type: 'subject-erased' });
	const gone = await call('GET', `/subjects/${customer}`, { status: 200, label: 'GET /subjects after erasure' });
	if (gone.body?.erased !== true) fail('GET /subjects after erasure', JSON.stringify(gone.body));
}

/** A request to every operation except the probes and /metrics (ids need not exist). */

/**
 * Consumer groups and webhooks: every operation with its documented answers.
 * The webhook targets do not resolve (no private address is allowed here), so
 * their deliveries only fail and retry in the background.
 */
async function integration() {
	section = 'consumer groups';
	const g = `cg-${process.pid}`;
	const base = `/subscriptions/${g}`;
	const D = '00000000-0000-4000-8000-000000000000';
	await call('PUT', base, { json: { categories: ['cgc'], start: 'beginning', ack_timeout_ms: 60000 }, status: 201 });
	await call('PUT', base, { json: { categories: ['cgc'], start: 'beginning', max_deliveries: 1 }, status: 200 });
	await call('PUT', base, { json: { start: 'end' }, status: 409, type: 'subscription-start-fixed' });
	for (const [json, what] of [[{}, 'no start'], [{ start: 'soon' }, 'bad start'], [{ start: 'end', ordering: 'random' }, 'bad ordering'],
		[{ start: 'end', categories: [] }, 'empty categories'], [{ start: 'end', categories: ['a-b'] }, 'a stream, not a category'],
		[{ start: 'end', ack_timeout_ms: 1 }, 'ack timeout too short'], [{ start: 'end', max_deliveries: 0 }, 'no deliveries'],
		[{ start: 'end', extra: 1 }, 'unknown member'], [[], 'array body']])
		await call('PUT', base, { json, status: 400, type: 'invalid-field', label: `PUT subscription: ${what}` });
	await call('PUT', base, { json: '{"start": ', status: 400, type: 'invalid-json' });
	await call('PUT', '/subscriptions/.hidden', { json: { start: 'end' }, status: 400, type: 'invalid-parameter' });
	await call('PUT', base, { body: '{}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('PUT', base, { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	await call('GET', base, { status: 200 });
	await call('GET', '/subscriptions/.x', { status: 400, type: 'invalid-parameter' });
	await call('GET', '/subscriptions/missing', { status: 404, type: 'not-found' });

	await call('POST', `/streams/cgc-1/events`, { json: { expected_version: 'any', events: [{ type: 'A', data: {} }, { type: 'B', data: {} }] }, status: 201 });
	let pulled = [];
	for (let i = 0; i < 20 && !pulled.length; i++)
		pulled = (await call('GET', `${base}/events`, { query: { consumer: 'contract', max: '10', wait_ms: '1000' }, status: 200 })).body?.events || [];
	if (pulled.length !== 1) fail('pull', `expected the stream's first event alone, got ${JSON.stringify(pulled)}`);
	for (const [query, what] of [[{}, 'no consumer'], [{ consumer: 'a b' }, 'bad consumer'], [{ consumer: 'c', max: '0' }, 'max 0'],
		[{ consumer: 'c', wait_ms: '-1' }, 'negative wait'], [{ consumer: 'c', wait_ms: '30001' }, 'wait too long']])
		await call('GET', `${base}/events`, { query, status: 400, type: 'invalid-parameter', label: `pull: ${what}` });
	await call('GET', '/subscriptions/missing/events', { query: { consumer: 'c', wait_ms: '0' }, status: 404, type: 'not-found' });

	const id = pulled[0]?.delivery_id || D;
	for (const what of ['ack', 'nack']) {
		const good = what === 'ack' ? { delivery_ids: [D] } : { delivery_ids: [D], action: 'retry' };
		await call('POST', `${base}/${what}`, { json: good, status: 409, type: 'unknown-delivery' });
		await call('POST', `/subscriptions/missing/${what}`, { json: good, status: 404, type: 'not-found' });
		await call('POST', `${base}/${what}`, { json: { delivery_ids: ['nope'] }, status: 400, type: 'invalid-field' });
		await call('POST', `${base}/${what}`, { json: { delivery_ids: [] }, status: 400, type: 'invalid-field' });
		await call('POST', `${base}/${what}`, { body: JSON.stringify(good), headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
		await call('POST', `${base}/${what}`, { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	}
	await call('POST', `${base}/nack`, { json: { delivery_ids: [D], action: 'later' }, status: 400, type: 'invalid-field' });
	await call('POST', `${base}/nack`, { json: { delivery_ids: [D], action: 'park', delay_ms: 5 }, status: 400, type: 'invalid-field' });
	// park the first event: the second waits behind it; replay it and ack both
	await call('POST', `${base}/nack`, { json: { delivery_ids: [id], action: 'park' }, status: 200 });
	const parked = await call('GET', `${base}/parked`, { query: { limit: '10' }, status: 200 });
	if (parked.body?.parked?.length !== 1) fail('parked', JSON.stringify(parked.body));
	await call('GET', `${base}/parked`, { query: { after: 'x' }, status: 400, type: 'invalid-parameter' });
	await call('GET', `${base}/parked`, { query: { limit: '0' }, status: 400, type: 'invalid-parameter' });
	await call('GET', '/subscriptions/missing/parked', { status: 404, type: 'not-found' });
	await call('POST', `${base}/parked/replay`, { json: { delivery_ids: [D] }, status: 409, type: 'unknown-delivery' });
	await call('POST', `${base}/parked/replay`, { json: { delivery_ids: 'all' }, status: 400, type: 'invalid-field' });
	await call('POST', `${base}/parked/replay`, { body: '{}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('POST', `${base}/parked/replay`, { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	await call('POST', '/subscriptions/missing/parked/replay', { status: 404, type: 'not-found' });
	const replayed = await call('POST', `${base}/parked/replay`, { json: { delivery_ids: [id] }, status: 200 });
	if (replayed.body?.replayed !== 1) fail('replay', JSON.stringify(replayed.body));
	for (let n = 0; n < 2; n++) {
		let ev = [];
		for (let i = 0; i < 20 && !ev.length; i++)
			ev = (await call('GET', `${base}/events`, { query: { consumer: 'contract', wait_ms: '1000' }, status: 200 })).body?.events || [];
		await call('POST', `${base}/ack`, { json: { delivery_ids: ev.map((e) => e.delivery_id) }, status: 200 });
	}
	await call('GET', '/subscriptions', { status: 200 });
	await call('DELETE', base, { status: 204 });
	await call('DELETE', base, { status: 404, type: 'not-found' });
	await call('DELETE', '/subscriptions/.x', { status: 400, type: 'invalid-parameter' });

	section = 'webhooks';
	const w = `/webhooks/wh-${process.pid}`;
	const hook = { url: 'https://receiver.invalid/factd', secret: 'contract-secret-0001', categories: ['cgc'], max_attempts: 1 };
	const created = await call('PUT', w, { json: hook, status: 201 });
	if (JSON.stringify(created.body || {}).includes(hook.secret)) fail('PUT webhook', 'the secret was shown');
	await call('PUT', w, { json: { ...hook, timeout_ms: 1000 }, status: 200 });
	for (const [json, what] of [[{ ...hook, url: 'ftp://example.com/' }, 'ftp'], [{ ...hook, url: 'http://127.0.0.1:9/' }, 'loopback'],
		[{ ...hook, url: 'http://169.254.169.254/' }, 'link-local'], [{ ...hook, url: 'http://user:pw@example.com/' }, 'credentials'],
		[{ ...hook, secret: 'short' }, 'short secret'], [{ url: hook.url }, 'no secret'], [{ ...hook, max_attempts: 0 }, 'no attempts'],
		[{ ...hook, timeout_ms: 10 }, 'timeout too short'], [{ ...hook, extra: true }, 'unknown member']])
		await call('PUT', w, { json, status: 400, type: 'invalid-field', label: `PUT webhook: ${what}` });
	await call('PUT', '/webhooks/.x', { json: hook, status: 400, type: 'invalid-parameter' });
	await call('PUT', w, { body: '{}', headers: { 'Content-Type': 'text/plain' }, status: 415, type: 'unsupported-media-type' });
	await call('PUT', w, { json: big(MAX_BODY), status: 413, type: 'body-too-large' });
	await call('POST', `/streams/cgc-2/events`, { json: { expected_version: 'any', events: [{ type: 'A', data: {} }] }, status: 201 });
	let doc;
	for (let i = 0; i < 100; i++) {
		doc = (await call('GET', w, { status: 200 })).body;
		if (doc?.status === 'disabled') break;
		await sleep(100);
	}
	if (doc?.status !== 'disabled' || !doc?.last_delivery?.error) fail('webhook', `not disabled after a failed attempt: ${JSON.stringify(doc)}`);
	await call('GET', '/webhooks', { status: 200 });
	await call('GET', '/webhooks/.x', { status: 400, type: 'invalid-parameter' });
	await call('GET', '/webhooks/missing', { status: 404, type: 'not-found' });
	await call('POST', `${w}/resume`, { status: 200 });
	await call('POST', '/webhooks/missing/resume', { status: 404, type: 'not-found' });
	await call('POST', '/webhooks/.x/resume', { status: 400, type: 'invalid-parameter' });
	await call('DELETE', w, { status: 204 });
	await call('DELETE', w, { status: 404, type: 'not-found' });
	await call('DELETE', '/webhooks/.x', { status: 400, type: 'invalid-parameter' });
}

function operationSteps() {
	const o = '00000000-0000-4000-8000-000000000001';
	return [
		['GET', '/streams/s-1/events', {}], ['POST', '/streams/s-1/events', { json: { expected_version: 'any', events: [{ type: 'X', data: {} }] } }],
		['GET', '/events', {}], ['GET', '/events/stream', {}], ['POST', '/orders', { json: { customer_id: 'c' } }], ['GET', `/orders/${o}`, {}], ['GET', `/orders/${o}/events`, {}],
		['POST', `/orders/${o}/lines`, { json: { product_id: 'S', quantity: 1, unit_price_cents: 1 } }], ['DELETE', `/orders/${o}/lines/S`, {}],
		['POST', `/orders/${o}/place`, {}], ['POST', `/orders/${o}/cancel`, { json: { reason: 'r' } }], ['POST', `/orders/${o}/ship`, {}],
		['POST', '/products', { json: { name: 'n', stock: 1 } }], ['GET', '/products/S', {}], ['GET', '/products/S/events', {}],
		['POST', '/products/S/restock', { json: { quantity: 1 } }], ['POST', '/payments', { json: { order_id: o, amount_cents: 1 } }],
		['GET', `/payments/${o}`, {}], ['GET', `/payments/${o}/events`, {}], ['POST', `/payments/${o}/process`, {}], ['POST', `/payments/${o}/refund`, {}],
		['GET', '/orders', {}], ['GET', '/products', {}], ['GET', '/projections', {}], ['POST', '/projections/order_summaries/rebuild', {}],
		['GET', '/sagas', {}], ['GET', `/sagas/${o}`, {}], ['GET', `/orders/${o}/saga`, {}], ['POST', `/sagas/${o}/retry`, {}], ['POST', `/sagas/${o}/abort`, {}],
		['GET', '/streams', {}], ['GET', '/categories', {}], ['GET', '/events/head', {}],
		['DELETE', '/streams/s-1', {}], ['POST', '/streams/s-1/truncate', { json: { before_version: 1 } }],
		['GET', '/retention', {}], ['GET', '/retention/audit', {}], ['PUT', '/retention/audit', { json: { max_age_days: 1 } }],
		['DELETE', '/retention/audit', {}],
		['GET', '/subjects/c-1', {}], ['DELETE', '/subjects/c-1', {}],
		['GET', '/subscriptions', {}], ['PUT', '/subscriptions/g-1', { json: { start: 'end' } }], ['GET', '/subscriptions/g-1', {}],
		['DELETE', '/subscriptions/g-1', {}], ['GET', '/subscriptions/g-1/events', { query: { consumer: 'c', wait_ms: '0' } }],
		['POST', '/subscriptions/g-1/ack', { json: { delivery_ids: [o] } }], ['POST', '/subscriptions/g-1/nack', { json: { delivery_ids: [o], action: 'skip' } }],
		['GET', '/subscriptions/g-1/parked', {}], ['POST', '/subscriptions/g-1/parked/replay', {}],
		['GET', '/webhooks', {}], ['PUT', '/webhooks/w-1', { json: { url: 'https://receiver.invalid/hook', secret: 'contract-secret-0001' } }],
		['GET', '/webhooks/w-1', {}], ['DELETE', '/webhooks/w-1', {}], ['POST', '/webhooks/w-1/resume', {}],
	];
}

/** 503s: one factd whose database is unreachable, one whose database is not migrated. */
async function unavailable(down, unmigrated) {
	section = 'database unavailable';
	await call('GET', '/healthz', { status: 200 }, down);
	await call('GET', '/readyz', { status: 503, type: 'database-unavailable' }, down);
	await call('GET', '/schema/events', { status: 200, label: 'the catalogue, which needs no database' }, down);
	for (const [m, p, opts] of operationSteps()) {
		const r = await call(m, p, { ...opts, status: 503, type: 'database-unavailable' }, down);
		if (r.status === 503 && r.headers['retry-after'] === undefined) fail(`${m} ${p}`, 'no Retry-After');
	}
	section = 'migrations pending';
	await call('GET', '/readyz', { status: 503, type: 'not-ready' }, unmigrated);
}

const KEYS = { read: 'contract-read-key-0001', write: 'contract-write-key-001', admin: 'contract-admin-key-01' };
const bearer = (key) => ({ Authorization: `Bearer ${key}` });

/** 401 and 403 on every operation of a factd with API keys; the probes stay open. */
async function access(keyed) {
	section = 'API keys';
	await call('GET', '/healthz', { status: 200 }, keyed);
	await call('GET', '/readyz', { status: 200 }, keyed);
	for (const [m, p, opts] of [...operationSteps(), ['GET', '/metrics', {}], ['GET', '/app', {}], ['GET', '/schema/events', {}]]) {
		const none = await call(m, p, { ...opts, status: 401, type: 'unauthorized', label: `${m} ${p} without a key` }, keyed);
		if (none.status === 401 && none.headers['www-authenticate'] !== 'Bearer realm="factd"')
			fail(`${m} ${p} without a key`, `WWW-Authenticate is ${JSON.stringify(none.headers['www-authenticate'])}`);
		const bad = await call(m, p, { ...opts, headers: bearer('not-a-key-of-this-factd'), status: 401, type: 'unauthorized', label: `${m} ${p} with an unknown key` }, keyed);
		if (bad.status === 401 && !/error="invalid_token"/.test(bad.headers['www-authenticate'] || ''))
			fail(`${m} ${p} with an unknown key`, `WWW-Authenticate is ${JSON.stringify(bad.headers['www-authenticate'])}`);
		const admin = /\/(rebuild|retry|abort|truncate)$/.test(p) || p.startsWith('/retention') || p.startsWith('/subjects/') || /\/(replay|resume)$/.test(p) || (m === 'PUT' && /^\/(subscriptions|webhooks)\//.test(p)) || (m === 'DELETE' && /^\/(subscriptions|webhooks)\//.test(p)) || (m === 'DELETE' && /^\/streams\/[^/]+$/.test(p));
		if (m === 'GET' && !admin) continue;
		const small = await call(m, p, { ...opts, headers: bearer(admin ? KEYS.write : KEYS.read), status: 403, type: 'forbidden', label: `${m} ${p} with too small a role` }, keyed);
		if (small.status === 403 && small.body?.required_role !== (admin ? 'admin' : 'write'))
			fail(`${m} ${p} with too small a role`, `required_role is ${small.body?.required_role}`);
	}
	await call('GET', '/events', { headers: bearer(KEYS.read), status: 200 }, keyed);
	// The caller's role, and the console's files, need no key.
	for (const [headers, role] of [[{}, 'none'], [bearer('not-a-key-of-this-factd'), 'none'], [bearer(KEYS.read), 'read'], [bearer(KEYS.admin), 'admin']]) {
		const w = await call('GET', '/whoami', { headers, status: 200, label: `GET /whoami as ${role}` }, keyed);
		if (w.body?.role !== role || w.body?.keys_required !== true) fail(`GET /whoami as ${role}`, JSON.stringify(w.body));
	}
	await call('GET', '/console', { status: 200, label: 'GET /console without a key' }, keyed);
	await call('GET', '/console/console.js', { status: 200, label: 'GET /console/console.js without a key' }, keyed);
	await call('GET', '/metrics', { headers: bearer(KEYS.read), status: 200 }, keyed);
	await call('POST', '/streams/keyed-1/events', { headers: bearer(KEYS.write), json: { expected_version: 'any', events: [{ type: 'Keyed', data: {} }] }, status: 201 }, keyed);
	await call('POST', '/projections/order_summaries/rebuild', { headers: bearer(KEYS.admin), status: 202 }, keyed);
}

/** 503 too-many-connections on every operation while another connection holds FACTD_MAX_CONNECTIONS=1. */
async function connectionLimit(capped) {
	section = 'connection limit';
	const url = new URL(capped.base);
	const held = await new Promise((resolve, reject) => {
		const s = net.connect(Number(url.port), url.hostname, () => resolve(s));
		s.on('error', reject);
	});
	await sleep(200);
	try {
		const open = [['GET', '/whoami', {}], ['GET', '/app', {}], ['GET', '/console', {}], ['GET', '/console/console.js', {}]];
		for (const [m, p, opts] of [['GET', '/healthz', {}], ['GET', '/readyz', {}], ['GET', '/metrics', {}], ['GET', '/schema/events', {}], ...open, ...operationSteps()]) {
			const r = await call(m, p, { ...opts, status: 503, type: 'too-many-connections' }, capped);
			if (r.status === 503 && r.headers['retry-after'] === undefined) fail(`${m} ${p}`, 'no Retry-After');
		}
	} finally {
		held.destroy();
	}
	await sleep(200);
	await call('GET', '/healthz', { status: 200, label: 'GET /healthz once the held connection closed' }, capped);
}

/** 431 headers-too-large on every operation: request line and headers past 16 KiB. */
async function headersTooLarge() {
	section = 'headers too large';
	const filler = {};
	for (let i = 0; i < 3; i++) filler[`X-Filler-${i}`] = 'f'.repeat(6000);
	// No body: the answer comes before it, and the connection closes after it.
	const open = [['GET', '/whoami'], ['GET', '/app'], ['GET', '/console'], ['GET', '/console/console.js']];
	for (const [m, p] of [['GET', '/healthz'], ['GET', '/readyz'], ['GET', '/metrics'], ['GET', '/schema/events'], ...open, ...operationSteps()]) {
		const r = await call(m, p, { headers: filler, status: 431, type: 'headers-too-large' });
		if (r.status === 431 && r.headers.connection !== 'close') fail(`${m} ${p}`, `Connection is ${r.headers.connection}, not close`);
	}
}

/** 400 encoded-slash on every operation with a path parameter: %2F in the segment. */
async function encodedSlash() {
	section = 'encoded slash';
	for (const [m, p, opts] of operationSteps()) {
		const segments = p.split('/');
		// the last segment that is a parameter: an id, a name, a stream
		const k = segments.findLastIndex((x, i) => i > 1 && !['events', 'stream', 'head', 'lines', 'place', 'cancel', 'ship', 'restock', 'process', 'refund', 'rebuild', 'saga', 'retry', 'abort', 'ack', 'nack', 'parked', 'replay', 'resume', 'truncate'].includes(x));
		if (k < 0) continue;
		segments[k] = `a%2F${segments[k]}`;
		await call(m, segments.join('/'), { ...opts, status: 400, type: 'encoded-slash' });
	}
}

function report() {
	const rows = operations.map((o) => {
		const documented = Object.keys(o.op.responses || {});
		const seen = coverage.get(o.id);
		const missing = documented.filter((s) => !seen.has(s));
		const notes = [];
		for (const s of missing) {
			if (NOT_PROVOKED[s]) continue;
			if (BEST_EFFORT[`${o.id} ${s}`]) notes.push(`${s}: not observed (${BEST_EFFORT[`${o.id} ${s}`]})`);
			else fail('coverage', `${o.id}: documented status ${s} was not exercised`);
		}
		if (!seen.size) fail('coverage', `${o.id} was not exercised`);
		return [o.id, `${o.method} ${o.path}`, [...seen].sort().join(' '), missing.join(' ') || '-', notes.join('; ')];
	});
	const head = ['operation', 'route', 'statuses exercised', 'documented, not exercised'];
	const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
	const line = (r) => r.slice(0, 4).map((c, i) => c.padEnd(w[i])).join('  ');
	console.log(`\ncontract coverage (${path.relative(root, specFile)} operations):`);
	console.log(line(head));
	console.log(line(w.map((n) => '-'.repeat(n))));
	for (const r of rows) console.log(line(r) + (r[4] ? `  (${r[4]})` : ''));
	console.log(`may stay unexercised: ${Object.entries(NOT_PROVOKED).map(([s, why]) => `${s} (${why})`).join('; ')}`);
	console.log(`probes of undocumented paths and methods: ${probes.length} requests, all answered 404 or 405 as documented unless reported above`);
}

// ---- main -----------------------------------------------------------------------------

async function main() {
	if (!adminUrl) throw new Error('FACTD_TEST_ADMIN_URL is not set (scripts/test sets it)');
	const started = Date.now();
	const tag = `contract_${process.pid}_${Date.now().toString(36)}`;
	const databases = [`${tag}`, `${tag}_unmigrated`, `${tag}_sagas`, `${tag}_schemas`];
	try {
		const url = await createDatabase(databases[0], 'factd_template');
		const bare = await createDatabase(databases[1], 'template0');
		const sagaUrl = await createDatabase(databases[2], 'factd_template');
		const schemaUrl = await createDatabase(databases[3], 'factd_template');
		// The main instance: the documented default limits; the simulated gateway fails
		// each payment's first attempt and declines amounts over 100000 cents.  Neither
		// it nor the next one runs sagas, which would change placed orders behind the
		// steps' backs (confirm or cancel them).
		// The main instance seals personal data under a master key; the others have none.
		keyDir = mkdtempSync(path.join(os.tmpdir(), 'factd-contract-'));
		const keyFile = path.join(keyDir, 'master.key');
		writeFileSync(keyFile, createHash('sha256').update(tag).digest('hex') + '\n', { mode: 0o600 });
		api = await startFactd('main', { FACTD_DATABASE_URL: url, FACTD_SAGAS: '0', FACTD_PAYMENT_FAIL_FIRST: '1', FACTD_PAYMENT_LIMIT_CENTS: '100000', FACTD_MASTER_KEY_FILE: keyFile });
		// The same database, a gateway that never answers (202), and no command retries
		// (concurrent commands meet 409 concurrency-conflict).
		const silent = await startFactd('gateway never answers', { FACTD_DATABASE_URL: url, FACTD_SAGAS: '0', FACTD_PAYMENT_NEVER_ANSWER: '1', FACTD_COMMAND_RETRIES: '0' });
		// Sagas on a database of their own; the gateway never answers, so an order's saga
		// waits at take_payment for its timeout (30 s, made 120 s here so that a slow
		// machine still aborts it first).
		const sagaInst = await startFactd('sagas', { FACTD_DATABASE_URL: sagaUrl, FACTD_PAYMENT_NEVER_ANSWER: '1', FACTD_SAGA_TIME_PERCENT: '400' });
		// Events newer than the code, on a database of their own: they would stop every follower reading them.
		const schemaInst = await startFactd('event schemas', { FACTD_DATABASE_URL: schemaUrl, FACTD_SAGAS: '0', FACTD_PROJECTIONS: '0' });
		// 503s: a database nobody listens for, and one without factd's schema.
		const nowhere = `postgresql://postgres@127.0.0.1:${await freePort()}/factd?connect_timeout=2`;
		const down = await startFactd('database unreachable', { FACTD_DATABASE_URL: nowhere, FACTD_MIGRATE: '0', FACTD_POOL_TIMEOUT_MS: '500' });
		const unmigrated = await startFactd('migrations pending', { FACTD_DATABASE_URL: bare, FACTD_MIGRATE: '0' });
		// API keys (one hashed, as operators may give them), and a limit of one connection.
		const adminHash = createHash('sha256').update(KEYS.admin).digest('hex');
		const keyed = await startFactd('with API keys', {
			FACTD_DATABASE_URL: url, FACTD_PROJECTIONS: '0', FACTD_SAGAS: '0',
			FACTD_API_KEYS: `read:${KEYS.read},write:${KEYS.write},admin:sha256:${adminHash}`,
		});
		const capped = await startFactd('one connection', { FACTD_DATABASE_URL: url, FACTD_PROJECTIONS: '0', FACTD_SAGAS: '0', FACTD_MAX_CONNECTIONS: '1' });
		await waitReady(api);
		await waitReady(silent);
		await waitReady(keyed);
		await waitReady(capped);
		await waitReady(sagaInst);
		await waitReady(schemaInst);

		await health();
		const s = await streams();
		await feed(s.split('-')[0]);
		await liveFeed(s.split('-')[0]);
		await catalog(s);
		await orders();
		const sku = await products();
		const order = await payments();
		section = 'payments';
		const p = (await call('POST', '/payments', { json: { order_id: order, amount_cents: 100 }, status: 201 })).body?.payment_id;
		const na = await call('POST', `/payments/${p}/process`, { status: 202 }, silent);
		if (na.body?.gateway !== 'no_answer') fail('process without an answer', JSON.stringify(na.body));
		await foreignStreams();
		await brokenAggregates(url);
		await eventSchemas(schemaUrl, schemaInst);
		await subjects(silent, keyed);
		await readModels();
		await lifecycle();
		await sagas(sagaInst);
		await integration();
		await simpleGets();
		await races(order, sku, silent);
		await routeProbes();
		await unavailable(down, unmigrated);
		await access(keyed);
		await headersTooLarge();
		await encodedSlash();
		await connectionLimit(capped);
	} finally {
		for (const inst of instances) await stopFactd(inst);
		for (const db of databases) dropDatabase(db);
		if (keyDir) rmSync(keyDir, { recursive: true, force: true });
	}
	report();
	console.log(`contract: ${requestSeq} requests in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

// ---- the bank (--app bank): examples/bank/openapi.yaml against factd-bank ----------------

function bankKeyFirstUse(key, label) {
	return call('POST', '/accounts', { json: { owner: 'key-owner' }, headers: { 'Idempotency-Key': key }, status: 201, label });
}

const bankCommandErrors = (method, p, goodBody, opts = {}) => commandErrors(method, p, goodBody, { keyFirstUse: bankKeyFirstUse, ...opts });

/** Opens an account with `cents` in it; its id. */
async function bankAccount(owner, cents) {
	const id = (await call('POST', '/accounts', { json: { owner }, status: 201 })).body?.account_id;
	if (cents) await call('POST', `/accounts/${id}/deposit`, { json: { amount_cents: cents }, status: 200 });
	return id;
}

async function bankAccounts() {
	section = 'accounts';
	const created = await call('POST', '/accounts', { json: { owner: 'Ada Lovelace' }, status: 201 });
	checkCommandResult(created, 'account_id', 'open account');
	const id = created.body?.account_id;
	if (created.headers.location !== `/accounts/${id}`) fail('open account', `Location ${created.headers.location}`);
	const own = uuid();
	await call('POST', '/accounts', { json: { owner: 'Ada', account_id: own.toUpperCase() }, status: 201, label: 'open account with an id of its own' });
	await call('POST', '/accounts', { json: { owner: 'Ada', account_id: own }, status: 409, type: 'account-exists' });
	await call('POST', '/accounts', { json: { owner: 'Ada', account_id: uuid() }, headers: { 'If-Match': '"0"' }, status: 201, label: 'open with If-Match "0"' });
	const key = `contract-account-${uuid()}`;
	const first = await call('POST', '/accounts', { json: { owner: 'Keyed' }, headers: { 'Idempotency-Key': key }, status: 201 });
	const again = await call('POST', '/accounts', { json: { owner: 'Keyed' }, headers: { 'Idempotency-Key': key }, status: 201, label: 'open account replay' });
	if (again.headers['idempotent-replayed'] !== 'true' || again.body?.account_id !== first.body?.account_id) fail('open account replay', `not replayed: ${JSON.stringify(again.body)}`);
	await call('POST', '/accounts', { json: { owner: '' }, status: 400, type: 'invalid-field' });
	await call('POST', '/accounts', { json: { owner: 'x', account_id: 'nope' }, status: 400, type: 'invalid-field' });
	await call('POST', '/accounts', { json: {}, status: 400, type: 'invalid-field' });
	await bankCommandErrors('POST', '/accounts', { owner: 'x' });

	const dep = `/accounts/${id}/deposit`, wd = `/accounts/${id}/withdraw`, close = `/accounts/${id}/close`;
	checkCommandResult(await call('POST', dep, { json: { amount_cents: 5000 }, status: 200 }), 'account_id', 'deposit');
	await call('POST', dep, { json: { amount_cents: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', dep, { json: { amount_cents: 100000000001 }, status: 400, type: 'invalid-field' });
	await call('POST', `/accounts/${uuid()}/deposit`, { json: { amount_cents: 1 }, status: 404, type: 'account-not-found' });
	await call('POST', '/accounts/not-a-uuid/deposit', { json: { amount_cents: 1 }, status: 404, type: 'not-found' });
	await bankCommandErrors('POST', dep, { amount_cents: 1 });
	checkCommandResult(await call('POST', wd, { json: { amount_cents: 1200 }, status: 200 }), 'account_id', 'withdraw');
	await call('POST', wd, { json: { amount_cents: 999999 }, status: 409, type: 'insufficient-funds' });
	await call('POST', wd, { json: { amount_cents: -1 }, status: 400, type: 'invalid-field' });
	await call('POST', `/accounts/${uuid()}/withdraw`, { json: { amount_cents: 1 }, status: 404, type: 'account-not-found' });
	await call('POST', '/accounts/not-a-uuid/withdraw', { json: { amount_cents: 1 }, status: 404, type: 'not-found' });
	await bankCommandErrors('POST', wd, { amount_cents: 1 });

	const got = await call('GET', `/accounts/${id}`, { status: 200 });
	if (got.body && (got.body.balance_cents !== 3800 || got.body.held_cents !== 0 || got.body.available_cents !== 3800 || got.body.status !== 'open'))
		fail('GET account', JSON.stringify(got.body));
	await call('POST', close, { status: 409, type: 'account-not-empty' });
	await call('POST', `/accounts/${uuid()}/close`, { status: 404, type: 'account-not-found' });
	await call('POST', '/accounts/not-a-uuid/close', { status: 404, type: 'not-found' });
	const empty = await bankAccount('Empty', 0);
	await bankCommandErrors('POST', `/accounts/${empty}/close`, {}, { jsonBody: false });
	checkCommandResult(await call('POST', `/accounts/${empty}/close`, { json: {}, status: 200 }), 'account_id', 'close');
	await call('POST', `/accounts/${empty}/close`, { status: 409, type: 'account-closed' });
	await call('POST', `/accounts/${empty}/deposit`, { json: { amount_cents: 1 }, status: 409, type: 'account-closed' });
	await call('POST', `/accounts/${empty}/withdraw`, { json: { amount_cents: 1 }, status: 409, type: 'account-closed' });
	const closed = await call('GET', `/accounts/${empty}`, { status: 200 });
	if (closed.body?.status !== 'closed') fail('GET closed account', JSON.stringify(closed.body));
	await aggregateReads('account', id, uuid(), 'not-a-uuid');
	return { id, closed: empty };
}

async function bankList(owner, position) {
	section = 'account list';
	const page = await call('GET', '/accounts', { query: { owner, limit: '2', min_position: position }, status: 200 });
	const ids = (page.body?.accounts || []).map((a) => a.account_id);
	if (ids.length !== 2 || page.body?.next !== ids[1]) fail('GET /accounts?limit=2', JSON.stringify(page.body));
	const rest = await call('GET', '/accounts', { query: { owner, limit: '2', after: page.body?.next || uuid() }, status: 200 });
	if ((rest.body?.accounts || []).length !== 1 || rest.body?.next !== null) fail('GET /accounts, second page', JSON.stringify(rest.body));
	await call('GET', '/accounts', { status: 200 });
	await call('HEAD', '/accounts', { status: 200 });
	for (const query of [{ limit: '0' }, { limit: 'x' }, { after: 'nope' }, { owner: '' }, { min_position: 'zz' }])
		await call('GET', '/accounts', { query, status: 400, type: 'invalid-parameter', label: `GET /accounts?${new URLSearchParams(query)}` });
}

/** Polls GET /transfers/{id} until the transfer is no longer pending. */
async function transferOutcome(id) {
	const deadline = Date.now() + 60000;
	for (;;) {
		const r = await call('GET', `/transfers/${id}`, { status: 200, label: 'poll a transfer' });
		if (r.body?.status !== 'pending' || Date.now() > deadline) return r.body || {};
		await sleep(100);
	}
}

async function bankTransfers(closedAccount) {
	section = 'transfers';
	const a = await bankAccount('Alice', 10000), b = await bankAccount('Bob', 0);
	const t = await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 2500 }, status: 202 });
	checkCommandResult(t, 'transfer_id', 'request transfer');
	const id = t.body?.transfer_id;
	if (t.headers.location !== `/transfers/${id}`) fail('request transfer', `Location ${t.headers.location}`);
	const done = await transferOutcome(id);
	if (done.status !== 'completed' || done.reason !== null || done.amount_cents !== 2500) fail('transfer', `not completed: ${JSON.stringify(done)}`);
	const poor = (await call('POST', '/transfers', { json: { from_account: b, to_account: a, amount_cents: 999999 }, status: 202 })).body?.transfer_id;
	const p = await transferOutcome(poor);
	if (p.status !== 'failed' || p.reason !== 'insufficient-funds') fail('transfer without the money', JSON.stringify(p));
	const lost = (await call('POST', '/transfers', { json: { from_account: a, to_account: closedAccount, amount_cents: 100 }, status: 202 })).body?.transfer_id;
	const l = await transferOutcome(lost);
	if (l.status !== 'failed' || l.reason !== 'target-unavailable') fail('transfer to a closed account', JSON.stringify(l));
	const acc = await call('GET', `/accounts/${a}`, { status: 200 });
	if (acc.body?.balance_cents !== 7500 || acc.body?.held_cents !== 0) fail('source after the transfers', JSON.stringify(acc.body));

	const own = uuid();
	await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 1, transfer_id: own }, status: 202, label: 'transfer with an id of its own' });
	await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 1, transfer_id: own }, status: 409, type: 'transfer-exists' });
	const key = `contract-transfer-${uuid()}`;
	const first = await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 1 }, headers: { 'Idempotency-Key': key }, status: 202 });
	const again = await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 1 }, headers: { 'Idempotency-Key': key }, status: 202, label: 'transfer replay' });
	if (again.headers['idempotent-replayed'] !== 'true' || again.body?.transfer_id !== first.body?.transfer_id) fail('transfer replay', JSON.stringify(again.body));
	await call('POST', '/transfers', { json: { from_account: a, to_account: a, amount_cents: 1 }, status: 400, type: 'invalid-field', label: 'transfer to the same account' });
	await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 0 }, status: 400, type: 'invalid-field' });
	await call('POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: -5 }, status: 400, type: 'invalid-field' });
	await call('POST', '/transfers', { json: { from_account: 'x', to_account: b, amount_cents: 5 }, status: 400, type: 'invalid-field' });
	await bankCommandErrors('POST', '/transfers', { from_account: a, to_account: b, amount_cents: 1 });
	await aggregateReads('transfer', id, uuid(), 'not-a-uuid');

	const deadline = Date.now() + 60000;
	for (;;) {
		const s = await call('GET', `/transfers/${id}/saga`, { status: [200, 404], label: 'poll a transfer saga' });
		if (s.status === 200 && s.body?.status === 'completed') {
			if (s.body.type !== 'transfer' || s.body.correlation_key !== id) fail('transfer saga', JSON.stringify(s.body));
			break;
		}
		if (Date.now() > deadline) {
			fail('transfer saga', `not completed: ${JSON.stringify(s.body)}`);
			break;
		}
		await sleep(100);
	}
	await call('GET', `/transfers/${uuid()}/saga`, { status: 404, type: 'not-found' });
	await call('GET', '/transfers/not-a-uuid/saga', { status: 404, type: 'not-found' });
	// a write to read back through the list's min_position
	return (await call('POST', `/accounts/${a}/deposit`, { json: { amount_cents: 1 }, status: 200 })).body?.position;
}

/** A request to every bank operation (ids need not exist). */
function bankOperationSteps() {
	const a = '00000000-0000-4000-8000-000000000001', b = '00000000-0000-4000-8000-000000000002';
	return [
		['POST', '/accounts', { json: { owner: 'o' } }], ['GET', '/accounts', {}], ['GET', `/accounts/${a}`, {}], ['GET', `/accounts/${a}/events`, {}],
		['POST', `/accounts/${a}/deposit`, { json: { amount_cents: 1 } }], ['POST', `/accounts/${a}/withdraw`, { json: { amount_cents: 1 } }],
		['POST', `/accounts/${a}/close`, {}], ['POST', '/transfers', { json: { from_account: a, to_account: b, amount_cents: 1 } }],
		['GET', `/transfers/${a}`, {}], ['GET', `/transfers/${a}/events`, {}], ['GET', `/transfers/${a}/saga`, {}],
	];
}

async function bankUnavailable(down) {
	section = 'database unavailable';
	for (const [m, p, opts] of bankOperationSteps()) {
		const r = await call(m, p, { ...opts, status: 503, type: 'database-unavailable' }, down);
		if (r.status === 503 && r.headers['retry-after'] === undefined) fail(`${m} ${p}`, 'no Retry-After');
	}
}

async function bankAccess(keyed) {
	section = 'API keys';
	for (const [m, p, opts] of bankOperationSteps()) {
		await call(m, p, { ...opts, status: 401, type: 'unauthorized', label: `${m} ${p} without a key` }, keyed);
		await call(m, p, { ...opts, headers: bearer('not-a-key-of-this-factd'), status: 401, type: 'unauthorized', label: `${m} ${p} with an unknown key` }, keyed);
		if (m === 'GET') continue;
		const small = await call(m, p, { ...opts, headers: bearer(KEYS.read), status: 403, type: 'forbidden', label: `${m} ${p} with a read key` }, keyed);
		if (small.status === 403 && small.body?.required_role !== 'write') fail(`${m} ${p} with a read key`, `required_role is ${small.body?.required_role}`);
	}
	await call('POST', '/accounts', { headers: bearer(KEYS.write), json: { owner: 'keyed' }, status: 201 }, keyed);
	await call('GET', '/accounts', { headers: bearer(KEYS.read), status: 200 }, keyed);
}

async function bankMain() {
	if (!adminUrl) throw new Error('FACTD_TEST_ADMIN_URL is not set (scripts/test sets it)');
	const started = Date.now();
	const tag = `contract_bank_${process.pid}_${Date.now().toString(36)}`;
	const databases = [tag];
	try {
		// factd's schema from the template; factd-bank adds its own migrations when it starts.
		const url = await createDatabase(databases[0], 'factd_template');
		api = await startFactd('main', { FACTD_DATABASE_URL: url, FACTD_SAGA_POLL_MS: '20' });
		const nowhere = `postgresql://postgres@127.0.0.1:${await freePort()}/factd?connect_timeout=2`;
		const down = await startFactd('database unreachable', { FACTD_DATABASE_URL: nowhere, FACTD_MIGRATE: '0', FACTD_POOL_TIMEOUT_MS: '500' });
		await waitReady(api);
		const keyed = await startFactd('with API keys', {
			FACTD_DATABASE_URL: url, FACTD_PROJECTIONS: '0', FACTD_SAGAS: '0', FACTD_API_KEYS: `read:${KEYS.read},write:${KEYS.write}`,
		});
		await waitReady(keyed);

		const { closed } = await bankAccounts();
		section = 'account list';
		const owner = `Lister ${process.pid}`;
		for (let i = 0; i < 3; i++) await bankAccount(owner, 100 * (i + 1));
		const position = await bankTransfers(closed);
		await bankList(owner, position);
		await routeProbes(['/accounts/00000000-0000-4000-8000-000000000000/hold', '/transfers/00000000-0000-4000-8000-000000000000/complete', '/orders', '/transfers/x/y/z']);
		await bankUnavailable(down);
		await bankAccess(keyed);
	} finally {
		for (const inst of instances) await stopFactd(inst);
		for (const db of databases) dropDatabase(db);
	}
	report();
	console.log(`contract: ${requestSeq} requests in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

try {
	await (appName === 'bank' ? bankMain() : main());
} catch (e) {
	fail('contract', e.stack || String(e));
}
if (failures.length) {
	for (const inst of instances) {
		console.error(`\n--- factd (${inst.name}) log, last 40 lines ---`);
		console.error(inst.log.slice(-40).join('\n'));
	}
	console.error(`\ncontract: ${failures.length} failure(s)`);
	process.exit(1);
}
console.log(`contract: ${path.relative(root, specFile)} and ${path.basename(factdBin)} agree`);
