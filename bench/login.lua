-- wrk script: full sign-ins through a login form, one per two requests. Each thread has one
-- connection (wrk -t N -c N), so each thread's state follows one browser: GET /login (a fresh
-- session and its CSRF token), then POST the form with that session's cookie.
local state, token, cookie = "form", nil, nil
local agent = "portal-bench/1"

function setup(thread)
  thread:set("user", os.getenv("BENCH_USER") or "alice")
  thread:set("password", os.getenv("BENCH_PASSWORD") or "alice-secret")
end

function request()
  if state == "form" then
    return wrk.format("GET", "/login", { ["User-Agent"] = agent })
  end
  local body = "csrf_token=" .. token .. "&username=" .. user .. "&password=" .. password
  local headers = {
    ["User-Agent"] = agent,
    ["Cookie"] = cookie,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }
  return wrk.format("POST", "/login", headers, body)
end

function response(status, headers, body)
  if state == "form" then
    token = body:match('name="csrf_token" type="hidden" value="([^"]+)"')
    cookie = (headers["Set-Cookie"] or ""):match("^([^;]+)")
    if token == nil or cookie == nil then
      error("no CSRF token or session cookie in the login form (status " .. status .. ")")
    end
    state = "post"
  else
    if status ~= 302 then
      error("a sign-in answered " .. status)
    end
    state = "form"
  end
end
