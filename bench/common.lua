-- common.lua - shared by the bench/*.lua wrk scripts.
--
-- Every script reports one machine-readable line from done():
--   BENCH requests=N ok=N errors=N socket_errors=N duration_us=N p50_us=N p99_us=N ...
-- "ok" counts responses the script accepted (right status, expected body);
-- "errors" counts every other response; socket errors (connect, read, write,
-- timeout) are reported apart.  Scripts count per thread in the globals
-- ok_count, error_count and extra_count, which done() adds up.

local M = {}

local threads = {}

-- Runs in wrk's main Lua state, once per thread, before the thread starts.
function M.setup(thread)
	threads[#threads + 1] = thread
	thread:set("thread_no", #threads)
end

function M.done(summary, latency, requests)
	local ok, errors, extra = 0, 0, 0
	local first_us, last_us = nil, nil
	-- A script may time its requests itself (feed.lua) and set these.
	local p50, p99 = latency:percentile(50), latency:percentile(99)
	for _, t in ipairs(threads) do
		p50 = t:get("p50_override") or p50
		p99 = t:get("p99_override") or p99
		ok = ok + (t:get("ok_count") or 0)
		errors = errors + (t:get("error_count") or 0)
		extra = extra + (t:get("extra_count") or 0)
		local f, l = t:get("first_us"), t:get("last_us")
		if f and f > 0 and (not first_us or f < first_us) then first_us = f end
		if l and l > 0 and (not last_us or l > last_us) then last_us = l end
	end
	local e = summary.errors
	local span_us = 0
	if first_us and last_us and last_us > first_us then span_us = last_us - first_us end
	io.write(string.format(
		"BENCH requests=%d ok=%d errors=%d socket_errors=%d status_errors=%d duration_us=%d " ..
		"p50_us=%d p99_us=%d max_us=%d mean_us=%.0f bytes=%d extra=%d span_us=%d\n",
		summary.requests, ok, errors, e.connect + e.read + e.write + e.timeout, e.status,
		summary.duration, p50, p99,
		latency.max, latency.mean, summary.bytes, extra, span_us))
end

-- A response header by name, whatever its case.
function M.header(headers, name)
	local v = headers[name]
	if v then return v end
	local lname = name:lower()
	for k, hv in pairs(headers) do
		if k:lower() == lname then return hv end
	end
	return nil
end

-- Monotonic clock in microseconds (LuaJIT FFI; wrk links LuaJIT).
local ok_ffi, ffi = pcall(require, "ffi")
if ok_ffi then
	pcall(ffi.cdef, [[
		typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
		int clock_gettime(int clk_id, bench_timespec *tp);
		int getpid(void);
		int kill(int pid, int sig);
	]])
end

function M.now_us()
	local ts = ffi.new("bench_timespec")
	ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
	return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

-- End the whole wrk run now (as Ctrl-C would): wrk stops its threads, prints
-- its summary and calls done().  Used by scripts that finish a fixed amount
-- of work before the -d time is up.
function M.finish()
	ffi.C.kill(ffi.C.getpid(), 2)
end

return M
