-- wrk script for `make soak` (bench/soak.py): one stream of the mixed load, every answer checked.
--
-- SOAK_MODE picks the stream:
--   signin  full sign-ins: GET /login, POST the form, GET / and GET /auth/verify with the new
--           session; each cycle signs in the next person, so a few threads sign in everyone
--   page    one person per thread, their pages in turn (SOAK_PEOPLE's paths)
--   verify  one person per thread, /auth/verify with the nginx question headers
-- SOAK_PEOPLE holds one line per person: username, password, display name, e-mail, session
-- cookie ("session=..."), paths (space-separated), separated by tabs.
-- SOAK_MAX_PER_THREAD (optional): each thread stops after that many answers.
--
-- Each thread has exactly one connection (wrk -tN -cN), so request() and response() alternate
-- and the thread knows what each answer was for. request() only reads the state (wrk calls it
-- once more on the first thread to check the script); response() advances it. Nothing here
-- calls error(): an error in a callback ends wrk, and a failure must be counted, not lose the
-- run.
-- done() prints one line, SOAK_RESULT {json}, that bench/soak.py reads.

local agent = "portal-bench/1"
local question = {
  ["X-Original-URL"] = "http://127.0.0.1/app/x",
  ["X-Original-Method"] = "GET",
}
local notes_kept = 8
local threads = {}
local created = 0

function setup(thread)
  thread:set("index", created)
  created = created + 1
  table.insert(threads, thread)
end

local function split(text, separator)
  local parts = {}
  for part in (text .. separator):gmatch("(.-)" .. separator) do
    table.insert(parts, part)
  end
  return parts
end

local function read_people()
  local found = {}
  for line in (os.getenv("SOAK_PEOPLE") or ""):gmatch("[^\n]+") do
    local f = split(line, "\t")
    table.insert(found, { username = f[1], password = f[2], name = f[3], email = f[4],
                          cookie = f[5], paths = split(f[6], " ") })
  end
  return found
end

function init(args)
  mode = os.getenv("SOAK_MODE") or "verify"
  people = read_people()
  limit = tonumber(os.getenv("SOAK_MAX_PER_THREAD") or "0") or 0
  -- Globals, so that done() can read them with thread:get().
  counts, statuses = {}, {}
  server_errors, unexpected, crossovers, answered = 0, 0, 0, 0
  notes = ""
  cycle = 0 -- sign-ins done (signin) or paths visited (page)
  step = "form" -- signin only: form, post, home, verify
  person = people[index % #people + 1]
  cookie = person.cookie
  token = nil
end

local function header(headers, wanted)
  -- wrk keeps header names as the server sent them: compare without case.
  wanted = wanted:lower()
  for name, value in pairs(headers) do
    if name:lower() == wanted then
      return value
    end
  end
  return nil
end

local function session_from(headers)
  local value = header(headers, "Set-Cookie")
  if value == nil then
    return nil
  end
  local pair = value:match("^([^;]+)")
  if pair ~= nil and pair:sub(1, 8) == "session=" then
    return pair
  end
  return nil
end

local function signed_in(extra)
  local headers = { ["User-Agent"] = agent, ["Cookie"] = cookie }
  for name, value in pairs(extra or {}) do
    headers[name] = value
  end
  return headers
end

local function current_path()
  return person.paths[cycle % #person.paths + 1]
end

function request()
  if mode == "verify" or (mode == "signin" and step == "verify") then
    return wrk.format("GET", "/auth/verify", signed_in(question))
  end
  if mode == "page" then
    return wrk.format("GET", current_path(), signed_in())
  end
  if step == "form" then
    return wrk.format("GET", "/login", { ["User-Agent"] = agent })
  end
  if step == "post" then
    local body = "csrf_token=" .. token .. "&username=" .. person.username
      .. "&password=" .. person.password
    local headers = signed_in({ ["Content-Type"] = "application/x-www-form-urlencoded" })
    return wrk.format("POST", "/login", headers, body)
  end
  return wrk.format("GET", "/", signed_in())
end

-- Whose page is this? "crossover" when it shows or names anyone but the person signed in.
local function check_page(body)
  local who = body:match('<span class="who">([^<]*)</span>')
  if who == nil then
    return "unexpected", "no signed-in name on the page"
  end
  if who ~= person.name then
    return "crossover", "the page is signed in as " .. who
  end
  for _, other in ipairs(people) do
    if other.username ~= person.username
      and (body:find(other.name, 1, true) or body:find(other.email, 1, true)) then
      return "crossover", "the page names " .. other.name
    end
  end
  return "ok", nil
end

-- Whom does /auth/verify vouch for? "crossover" when anyone but the cookie's person.
local function check_verify(headers)
  local user = header(headers, "Remote-User")
  if user == nil then
    return "unexpected", "no Remote-User"
  end
  if user ~= person.username then
    return "crossover", "Remote-User: " .. user
  end
  return "ok", nil
end

local function record(kind, status, verdict, note)
  counts[kind] = (counts[kind] or 0) + 1
  local key = kind .. " " .. status
  statuses[key] = (statuses[key] or 0) + 1
  if status >= 500 then
    server_errors = server_errors + 1
    verdict, note = "5xx", note or "a server error"
  elseif verdict == "crossover" then
    crossovers = crossovers + 1
  elseif verdict ~= "ok" then
    unexpected = unexpected + 1
  end
  if verdict ~= "ok" and notes_kept > 0 then
    notes_kept = notes_kept - 1
    notes = notes .. kind .. " as " .. person.username .. ": " .. status .. " " .. verdict
      .. " (" .. (note or "") .. ")\n"
  end
end

local function expect(status, wanted)
  if status == wanted then
    return "ok", nil
  end
  return "unexpected", "expected " .. wanted
end

local function next_person()
  -- Each thread signs in everyone in turn, starting from a different person.
  cycle = cycle + 1
  person = people[(index + cycle) % #people + 1]
  cookie, token, step = nil, nil, "form"
end

local function signin_response(status, headers, body)
  if step == "form" then
    local verdict, note = expect(status, 200)
    token = body:match('name="csrf_token" type="hidden" value="([^"]+)"')
    cookie = session_from(headers)
    if verdict == "ok" and (token == nil or cookie == nil) then
      verdict, note = "unexpected", "no CSRF token or session cookie in the form"
    end
    record("login_form", status, verdict, note)
    if verdict == "ok" then
      step = "post"
    end
    return
  end
  if step == "post" then
    local verdict, note = expect(status, 302)
    cookie = session_from(headers)
    if verdict == "ok" and cookie == nil then
      verdict, note = "unexpected", "no session cookie after signing in"
    end
    record("sign_in", status, verdict, note)
    if verdict == "ok" then
      step = "home"
    else
      next_person()
    end
    return
  end
  local verdict, note
  if step == "home" then
    verdict, note = expect(status, 200)
    if verdict == "ok" then
      verdict, note = check_page(body)
    end
    record("page", status, verdict, note)
    step = "verify"
  else
    verdict, note = expect(status, 200)
    if verdict == "ok" then
      verdict, note = check_verify(headers)
    end
    record("verify", status, verdict, note)
    next_person()
  end
end

function response(status, headers, body)
  answered = answered + 1
  if mode == "signin" then
    signin_response(status, headers, body)
  else
    local verdict, note = expect(status, 200)
    if verdict == "ok" then
      if mode == "page" then
        verdict, note = check_page(body)
      else
        verdict, note = check_verify(headers)
      end
    end
    record(mode, status, verdict, note)
    cycle = cycle + 1
    -- As a browser would: a session the portal re-issues replaces the old one.
    cookie = session_from(headers) or cookie
  end
  if limit > 0 and answered >= limit then
    wrk.thread:stop()
  end
end

local function encode(value)
  local kind = type(value)
  if kind == "number" then
    return string.format("%.17g", value)
  elseif kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    local parts = {}
    if value[1] ~= nil then
      for _, item in ipairs(value) do
        table.insert(parts, encode(item))
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for key, item in pairs(value) do
      table.insert(parts, encode(tostring(key)) .. ":" .. encode(item))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

function done(summary, latency, requests)
  local per_thread = {}
  for _, thread in ipairs(threads) do
    table.insert(per_thread, {
      counts = thread:get("counts"),
      statuses = thread:get("statuses"),
      server_errors = thread:get("server_errors"),
      unexpected = thread:get("unexpected"),
      crossovers = thread:get("crossovers"),
      notes = thread:get("notes"),
    })
  end
  local result = {
    mode = os.getenv("SOAK_MODE") or "verify",
    requests = summary.requests,
    duration_us = summary.duration,
    errors = summary.errors,
    latency_us = {
      p50 = latency:percentile(50),
      p90 = latency:percentile(90),
      p99 = latency:percentile(99),
      max = latency.max,
      mean = latency.mean,
    },
    threads = per_thread,
  }
  io.write("SOAK_RESULT " .. encode(result) .. "\n")
end
