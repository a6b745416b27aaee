-- place.lua - orders as customers make them: create an order, add a line,
-- place it (three commands through the shop's API), over and over.
--   wrk ... -s bench/place.lua http://host:port -- <products> <run-id>
--
-- Each connection works on one order at a time: the response to a step
-- (found by its echoed X-Request-Id) queues the order's next step, and a
-- connection with no step queued starts a new order.  The line is of one of
-- <products> products "sku-1" ... (created with enough stock beforehand), so
-- every placement starts an order fulfillment saga that runs to the end.
-- Counts 2xx answers as ok and placed orders as extra.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

ok_count, error_count, extra_count = 0, 0, 0
local products, run_id, seq, made = 8, "run", 0, 0
local ready, inflight = {}, {}
local headers = { ["Content-Type"] = "application/json" }

function init(args)
	products = tonumber(args[1] or "8")
	run_id = args[2] or run_id
end

local function send(o, method, path, body)
	seq = seq + 1
	local rid = string.format("p%s.%d.%d", run_id, thread_no or 0, seq)
	inflight[rid] = o
	headers["X-Request-Id"] = rid
	return wrk.format(method, path, headers, body)
end

function request()
	local o = table.remove(ready, 1)
	if not o then
		made = made + 1
		o = { step = "create", n = made }
		return send(o, "POST", "/orders", string.format('{"customer_id":"c-%d"}', made % 97))
	end
	if o.step == "line" then
		return send(o, "POST", "/orders/" .. o.id .. "/lines", string.format(
			'{"product_id":"sku-%d","quantity":1,"unit_price_cents":%d}', 1 + o.n % products, 100 + o.n % 50))
	end
	return send(o, "POST", "/orders/" .. o.id .. "/place", nil)
end

function response(status, hdrs, body)
	local rid = common.header(hdrs, "X-Request-Id")
	local o = rid and inflight[rid]
	if not o then
		error_count = error_count + 1
		return
	end
	inflight[rid] = nil
	if status < 200 or status > 299 then
		error_count = error_count + 1
		return
	end
	ok_count = ok_count + 1
	if o.step == "create" then
		o.id = body:match('"order_id"%s*:%s*"([^"]+)"')
		if not o.id then
			error_count = error_count + 1
			return
		end
		o.step = "line"
		ready[#ready + 1] = o
	elseif o.step == "line" then
		o.step = "place"
		ready[#ready + 1] = o
	else
		extra_count = extra_count + 1
	end
end
