-- wrk script for the interleaved middleware measurement (bench/apps/mw_pair.py): requests go to
-- /a for `block` requests, then to /b for as many, and so on; each carries its number (?n=N), so
-- the server can tell which block an arrival belongs to. Use one wrk thread (-t1): the counter is
-- per thread.  wrk -t1 -c64 -d20s -s alternate.lua http://HOST:PORT/ -- 1000
local n = 0
local block = 1000

function init(args)
  if args[1] then block = tonumber(args[1]) end
end

function request()
  local path = (math.floor(n / block) % 2 == 0) and "/a" or "/b"
  n = n + 1
  return wrk.format("GET", path .. "?n=" .. (n - 1))
end
