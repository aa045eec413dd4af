"""cicada's HTTP/1.1 request parser, as exposed to Python for tests and benchmarks.

The server calls the C parser directly; these names are the same code behind a Python face:
`parse_request(data, start=0, *, max_request_line=8192, max_head_size=65536, max_headers=100)`
parses the head at data[start:] and returns a `ParsedRequest`, None when more bytes are needed,
or raises `HTTPParseError` (a ValueError with `.status` and `.reason`).
`ChunkedDecoder().feed(data)` returns `(body_chunks, done, consumed)`.
"""

from cicada._core import (
    ChunkedDecoder,
    HTTPParseError,
    ParsedRequest,
    find_head_end,
    parse_request,
)

__all__ = ["ChunkedDecoder", "HTTPParseError", "ParsedRequest", "find_head_end", "parse_request"]
