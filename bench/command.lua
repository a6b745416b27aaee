-- command.lua - POST /orders/{id}/lines (the add_line command) on orders that
-- exist before the run.
--   wrk ... -s bench/command.lua http://host:port -- <orders-file> <threads> <run-id>
--
-- <orders-file> holds one order id a line.  Thread k of n takes the orders
-- whose line number is k modulo n.  As in append.lua an order never has two
-- commands in flight: a connection takes an order from the thread's free
-- list and the response (found by its echoed X-Request-Id) puts it back, so
-- no command has to be retried for a version conflict.  Each order gets lines
-- with distinct product ids (p1, p2, ...); past 500 lines the ids start over,
-- which adds to the quantity of an existing line, keeping every order well
-- under the 1000-line limit however long the run.  A response counts as ok
-- when it is 200 with a version.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count = 0, 0
local free, inflight, all = {}, {}, {}
local run_id, seq = "run", 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
	local file, nthreads = args[1], tonumber(args[2] or "1")
	run_id = args[3] or run_id
	local k = 0
	for line in io.lines(file) do
		if line ~= "" then
			if k % nthreads == (thread_no or 1) - 1 then
				local o = { id = line, lines = 0 }
				all[#all + 1] = o
				free[#free + 1] = o
			end
			k = k + 1
		end
	end
	if #all == 0 then error("command.lua: no orders for thread " .. tostring(thread_no)) end
end

function request()
	-- Oldest-freed first, so every order of the thread gets its share.
	local o = table.remove(free, 1)
	if not o then
		-- More connections than orders: share one (the command bus retries on conflict).
		o = all[(seq % #all) + 1]
	end
	o.lines = o.lines + 1
	seq = seq + 1
	local rid = string.format("c%s.%d.%d", run_id, thread_no or 0, seq)
	inflight[rid] = o
	headers["X-Request-Id"] = rid
	local body = string.format('{"product_id":"p%d","quantity":1,"unit_price_cents":1999}',
		(o.lines - 1) % 500 + 1)
	return wrk.format("POST", "/orders/" .. o.id .. "/lines", headers, body)
end

function response(status, hdrs, body)
	local rid = common.header(hdrs, "X-Request-Id")
	local o = rid and inflight[rid]
	if o then
		inflight[rid] = nil
		free[#free + 1] = o
	end
	if status == 200 and body:find('"version":', 1, true) then
		ok_count = ok_count + 1
	else
		error_count = error_count + 1
	end
end
