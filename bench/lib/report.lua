-- SPDX-License-Identifier: Apache-2.0
-- wrk script for the benchmarks: optional POST body from a file, and one
-- machine-readable result line (WRKJSON {...}) at the end.
--   WRK_METHOD=POST WRK_BODY_FILE=bench/data/order.json wrk -s bench/lib/report.lua ...
local method = os.getenv("WRK_METHOD")
local bodyfile = os.getenv("WRK_BODY_FILE")
if method then wrk.method = method end
if bodyfile then
  local f = assert(io.open(bodyfile, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
