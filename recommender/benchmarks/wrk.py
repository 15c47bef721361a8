"""Load from Debian's ``wrk``: one thread, a closed loop of connections, each
request with the next member's token; the Lua script counts the ``X-Cache``,
``X-Recommendation-Strategy`` and ``X-Process-Time`` headers and prints one JSON
line of results."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

LUA = r"""
local tokens = {}
local counter = 0
local path = "/"
hits, misses, other, bad = 0, 0, 0, 0
strategies = {}
ptimes = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  path = args[2]
end

function request()
  local token = tokens[(counter % #tokens) + 1]
  counter = counter + 1
  return wrk.format("GET", path, {["Authorization"] = "Token " .. token})
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
  local cache = headers["X-Cache"] or headers["x-cache"]
  if cache == "hit" then hits = hits + 1
  elseif cache == "miss" then misses = misses + 1
  else other = other + 1 end
  local s = headers["X-Recommendation-Strategy"]
    or headers["x-recommendation-strategy"] or "?"
  strategies[s] = (strategies[s] or 0) + 1
  local p = headers["X-Process-Time"] or headers["x-process-time"]
  if p then ptimes[#ptimes + 1] = tonumber(p) end
end

function done(summary, latency, requests)
  local out = {}
  local function add(k, v) out[#out + 1] = string.format('"%s": %s', k, v) end
  add("requests", summary.requests)
  add("duration_us", summary.duration)
  add("errors_connect", summary.errors.connect)
  add("errors_read", summary.errors.read)
  add("errors_write", summary.errors.write)
  add("errors_status", summary.errors.status)
  add("errors_timeout", summary.errors.timeout)
  add("p50_us", latency:percentile(50))
  add("p95_us", latency:percentile(95))
  add("p99_us", latency:percentile(99))
  add("mean_us", latency.mean)
  add("max_us", latency.max)
  local h, m, o, b, st, pt = 0, 0, 0, 0, {}, {}
  for _, t in ipairs(threads) do
    h = h + t:get("hits"); m = m + t:get("misses")
    o = o + t:get("other"); b = b + t:get("bad")
    for k, v in pairs(t:get("strategies")) do st[k] = (st[k] or 0) + v end
    for _, v in ipairs(t:get("ptimes")) do pt[#pt + 1] = string.format("%.6f", v) end
  end
  add("hits", h); add("misses", m); add("other", o); add("non_200", b)
  local parts = {}
  for k, v in pairs(st) do parts[#parts + 1] = string.format('"%s": %d', k, v) end
  add("strategies", "{" .. table.concat(parts, ", ") .. "}")
  add("process_times", "[" .. table.concat(pt, ",") .. "]")
  io.write("BENCHJSON {" .. table.concat(out, ", ") .. "}\n")
end
"""


def wrk_run(
    *,
    base: str,
    path: str,
    tokens: list[str],
    connections: int,
    duration: int,
    timeout: int,
    workdir: Path,
) -> dict:
    """Load ``base + path`` with wrk for ``duration`` seconds from ``connections``
    connections, each request carrying the next of ``tokens``; wrk's figures and
    the response headers' counts (see :data:`LUA`) as a dict."""
    script = workdir / "rotate_tokens.lua"
    script.write_text(LUA)
    token_file = workdir / f"tokens-{time.monotonic_ns()}.txt"
    token_file.write_text("\n".join(tokens) + "\n")
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout}s",
        "-s",
        str(script),
        base + path,
        "--",
        str(token_file),
        path,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + timeout + 60
    )
    line = next(
        (x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None
    )
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")
    return json.loads(line[len("BENCHJSON ") :])
