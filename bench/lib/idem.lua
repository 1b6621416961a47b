-- wrk script for bench/idempotency: POST orders with an Idempotency-Key.
--   WRK_BODY_FILE=bench/data/order-create.json WRK_IDEM=new|replay WRK_IDEM_PREFIX=run1 wrk -s bench/lib/idem.lua ...
-- new:    every request a fresh key (a claim, the upstream call, the completion)
-- replay: every request the same key (a read of the stored answer)
-- Ends with the same WRKJSON line as report.lua (loaded from WRK_LIB).
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local mode = os.getenv("WRK_IDEM") or "new"
local prefix = os.getenv("WRK_IDEM_PREFIX") or tostring(os.time())
local n = 0

function request()
  n = n + 1
  local key = mode == "replay" and (prefix .. "-replay") or (prefix .. "-" .. n)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json", ["Idempotency-Key"] = key }, body)
end

-- done(): the WRKJSON result line, shared with report.lua
dofile(os.getenv("WRK_LIB") .. "/report.lua")
