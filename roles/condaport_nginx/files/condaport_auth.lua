-- condaport_auth: the verifier mode's access check, run by NGINX (access_by_lua).
--
-- condaport-verifier checks the slow, strong hash (bcrypt). Its positive answers are kept
-- in a shared-memory dictionary for a TTL, so the hash runs once per client session, not
-- once per request. Entries are named by a keyed SHA-1 of the channel and the Authorization
-- header, under a random secret drawn at every configuration load; the load also empties
-- the dictionary. The condaport_nginx role reloads NGINX whenever users or tokens change,
-- so a revoked credential is refused on its next request. Nothing reaches a file, and
-- refusals are never kept.

local M = {}

local answers = ngx.shared.condaport_auth_answers
-- Metrics (nil when condaport_metrics_enabled is off): one atomic increment per check.
local counts = ngx.shared.condaport_metrics

local function count(what)
    if counts then
        counts:incr("auth:" .. what, 1, 0)
    end
end
local secret
local ttl
local gate
-- The gate lets a check wait up to 30 s for the verifier (proxy_read_timeout).
local CHECK_SECONDS = 35
local POLL_SECONDS = 0.01

-- Runs in the master process at every (re)load, before the workers start. gate_socket:
-- the unix socket of NGINX's rate-limited gate in front of the verifier.
function M.init(seconds, gate_socket)
    local random = assert(io.open("/dev/urandom", "rb"))
    secret = random:read(32)
    random:close()
    ttl = seconds
    gate = "unix:" .. gate_socket
    answers:flush_all()
end

-- The first 12 bytes of an IPv4 address mapped into IPv6 (::ffff:a.b.c.d).
local V4_MAPPED = string.rep("\0", 10) .. "\255\255"

-- The client network the gate's rate applies to: an IPv4 address, or an IPv6 /64, since
-- one subscriber commonly gets a whole /64 and may pick any address in it. Read from the
-- binary address (16 bytes for IPv6), so "::" compression needs no parsing.
local function gate_key()
    local binary = ngx.var.binary_remote_addr
    if #binary ~= 16 then
        return ngx.var.remote_addr
    end
    if binary:sub(1, 12) == V4_MAPPED then
        return string.format("%d.%d.%d.%d", binary:byte(13, 16))
    end
    local b = { binary:byte(1, 8) }
    return string.format("%x:%x:%x:%x::/64",
        b[1] * 256 + b[2], b[3] * 256 + b[4], b[5] * 256 + b[6], b[7] * 256 + b[8])
end

-- The verifier's status for these credentials, through the gate; nil when nobody answers.
-- A plain socket, not a subrequest: NGINX's Lua cannot make subrequests under HTTP/2.
local function ask_verifier(channel, authorization)
    if authorization:find("[\r\n]") then
        return ngx.HTTP_UNAUTHORIZED
    end
    local sock = ngx.socket.tcp()
    sock:settimeouts(2000, 5000, 35000)
    local ok = sock:connect(gate)
    if not ok then
        return nil
    end
    ok = sock:send({
        "GET /check/", channel, " HTTP/1.0\r\n",
        "Authorization: ", authorization, "\r\n",
        "X-Condaport-Client: ", ngx.var.remote_addr, "\r\n",
        "X-Condaport-Gate-Key: ", gate_key(), "\r\n\r\n",
    })
    local status_line = ok and sock:receive("*l")
    sock:close()
    return tonumber(status_line and status_line:match("^HTTP/1%.%d (%d%d%d)"))
end

local function challenge(realm)
    ngx.header["WWW-Authenticate"] = 'Basic realm="' .. realm .. '"'
    return ngx.exit(ngx.HTTP_UNAUTHORIZED)
end

-- One check per credential at a time: a client's parallel connections wait for the first
-- one's answer instead of each costing a bcrypt (and a place at the gate). True when that
-- answer let the credential in; false when this request should ask the verifier itself.
local function answered_meanwhile(key, checking)
    local give_up = ngx.now() + CHECK_SECONDS
    while ngx.now() < give_up do
        local claimed, err = answers:add(checking, true, CHECK_SECONDS)
        if claimed or err ~= "exists" then
            return false
        end
        ngx.sleep(POLL_SECONDS)
        if answers:get(key) then
            return true
        end
    end
    return false
end

-- realm: the channel's realm variable, "off" when the token map let this request's token
-- holder in already.
function M.check(channel, realm)
    if realm == "off" then
        return
    end
    local authorization = ngx.var.http_authorization
    if not authorization then
        return challenge(realm)
    end
    local key = ngx.sha1_bin(secret .. channel .. "\n" .. authorization)
    if answers:get(key) then
        count("cache_hit")
        return
    end
    local checking = key .. "?"
    if answered_meanwhile(key, checking) then
        count("cache_hit")
        return
    end
    local status = ask_verifier(channel, authorization)
    if status == ngx.HTTP_OK then
        answers:set(key, true, ttl)
    end
    answers:delete(checking)
    if status == ngx.HTTP_OK then
        count("allowed")
        return
    end
    if status == ngx.HTTP_UNAUTHORIZED then
        count("denied")
        return challenge(realm)
    end
    count("shed")
    -- The verifier is down, failing or full, or the gate's rate or ceiling is reached:
    -- fail closed.
    ngx.header["Retry-After"] = "5"
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
end

return M
