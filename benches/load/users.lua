-- wrk script: every request carries X-User-ID, cycling through 100 000
-- distinct values (so the proxies hash a fresh key each time, as in
-- production). The requests are formatted once, up front, so wrk spends
-- no time building them during the run.
--
-- With USERS_CLOSE=1 in the environment every request asks for
-- `Connection: close`, so each one is a new connection (over https://, a
-- full TLS handshake: wrk never resumes a session).
--
-- done() prints one machine-readable line for scripts/bench.sh:
--   RESULT requests=… duration_us=… p50_us=… p99_us=… status_errors=… socket_errors=…

local users = 100000
local reqs = {}
local i = 0

function init(args)
  local close = os.getenv("USERS_CLOSE") == "1"
  for n = 1, users do
    local headers = { ["X-User-ID"] = "user-" .. n }
    if close then headers["Connection"] = "close" end
    reqs[n] = wrk.format("GET", "/", headers)
  end
end

function request()
  i = i + 1
  if i > users then i = 1 end
  return reqs[i]
end

-- No response() hook: it would make wrk hand every response to Lua.
-- wrk's status errors are answers >= 400; the upstreams only ever answer
-- 200, so anything else (a proxy's 502/504) lands there.
function done(summary, latency, requests)
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, socket_errors))
end
