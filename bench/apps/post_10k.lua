-- wrk script for bench/suites/server.py: every request POSTs the same 10 KB body (wrk adds the
-- Content-Length); the raw app echoes it back.
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 640)
wrk.headers["Content-Type"] = "application/octet-stream"
