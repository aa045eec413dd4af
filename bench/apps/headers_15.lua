-- wrk script for bench/suites/server.py: a browser-like GET with 15 request headers (the 14
-- below plus the Host wrk adds).
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-US,en;q=0.5"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Referer"] = "https://www.example.com/products/list?page=2"
wrk.headers["Cookie"] = "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["Sec-Fetch-User"] = "?1"
wrk.headers["Cache-Control"] = "max-age=0"
wrk.headers["If-None-Match"] = 'W/"5e15153d-120f"'
wrk.headers["Connection"] = "keep-alive"
