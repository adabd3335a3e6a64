-- /usr/share/maildict/maildict-auth.lua -- Dovecot's passdb/userdb "lua" asking maildictd.
--
-- One script for Dovecot 2.3 (passdb { driver = lua }) and 2.4 (passdb lua { }), which has no
-- passdb/userdb "dict" driver any more. It speaks maildict's dict protocol on maildictd's UNIX
-- socket with lua-socket, asking exactly what the 2.3 dict driver asks (shared/passdb/<user>,
-- shared/userdb/<user>, iteration of shared/userdb/), so maildictd serves both the same way and
-- an operator can replay any lookup with socat (README, "Ask it by hand").
-- Needs: dovecot-auth-lua and lua-socket (Debian), configuration in 10-maildict-2.4.conf
-- (Dovecot 2.4) or 10-maildict-lua.conf (Dovecot 2.3).
--
-- Settings (Dovecot 2.4: lua_settings { } in the passdb/userdb block; Dovecot 2.3, which has
-- no lua_settings and rejects extra args: the environment variables MAILDICT_SOCKET,
-- MAILDICT_TIMEOUT and MAILDICT_DICT_NAME, passed with import_environment):
--   socket       maildictd's socket                            /run/maildict/dict.sock
--   dict_name    the dict name sent in the handshake (logs)    maildict
--   timeout      seconds to wait for maildictd                 2
--
-- The three outcomes stay apart (maildict's rule): an answer is the user's fields, "N" is an
-- unknown user, and everything else -- F, a timeout, a refused or lost connection, a reply
-- that does not parse -- is an internal failure, which Dovecot reports as a temporary failure
-- (code=temp_fail), never as an unknown user or a wrong password.

local unix = require("socket.unix")

local settings = {
  socket = os.getenv("MAILDICT_SOCKET") or "/run/maildict/dict.sock",
  dict_name = os.getenv("MAILDICT_DICT_NAME") or "maildict",
  timeout = tonumber(os.getenv("MAILDICT_TIMEOUT") or "2"),
}

-- Dovecot 2.4 hands script_init the lua_settings block as a table; Dovecot 2.3 hands it nothing.
function script_init(args)
  if type(args) == "table" then
    for k, v in pairs(args) do
      if settings[k] ~= nil then
        settings[k] = (k == "timeout") and tonumber(v) or v
      end
    end
  end
  if not settings.timeout or settings.timeout <= 0 then
    error("maildict-auth.lua: timeout must be a positive number of seconds")
  end
  return 0   -- 2.3 checks it, 2.4 ignores it
end

-- ---- the dict protocol ---------------------------------------------------------------------

-- Escaping as in Dovecot's dict protocol: \001 is the escape byte, TAB/LF/CR/NUL are escaped.
local ESCAPE = { ["\1"] = "\0011", ["\t"] = "\001t", ["\n"] = "\001n", ["\r"] = "\001r",
                 ["\0"] = "\0010" }
local UNESCAPE = { ["1"] = "\1", ["t"] = "\t", ["n"] = "\n", ["r"] = "\r", ["0"] = "\0" }

local function escape(s)
  return (s:gsub("[\1\t\n\r\0]", ESCAPE))
end

local function unescape(s)
  return (s:gsub("\001(.)", function(c) return UNESCAPE[c] or c end))
end

-- One connection per auth process, kept open between lookups, so that a login costs one
-- request and one reply, not a connect and a handshake as well. Requests go one at a time, so
-- the handshake asks for plain in-order replies (minor 0: no "*<id>"/"+<id>" async ids to
-- match up).
local conn = nil

local function disconnect()
  if conn then
    conn:close()
    conn = nil
  end
end

function script_deinit()
  disconnect()
end

local function connect()
  local c, err = (unix.stream or unix)()
  if not c then
    return nil, "cannot create a UNIX socket: " .. tostring(err)
  end
  c:settimeout(settings.timeout)
  local ok, cerr = c:connect(settings.socket)
  if not ok then
    c:close()
    return nil, "cannot connect to maildictd at " .. settings.socket .. ": " .. tostring(cerr)
  end
  local sent, serr = c:send("H3\t0\t0\t\t" .. escape(settings.dict_name) .. "\n")
  if not sent then
    c:close()
    return nil, "handshake with maildictd failed: " .. tostring(serr)
  end
  return c
end

-- Sends one request and calls read(conn) for its answer. A kept-open connection may have been
-- closed by maildictd (restart, idle timeout): then the request is sent once more on a fresh
-- connection. Lookups and iterations change nothing, so a repeat is harmless.
local function exchange(request, read)
  for attempt = 1, 2 do
    local fresh = false
    if not conn then
      local c, err = connect()
      if not c then
        return nil, err
      end
      conn, fresh = c, true
    end
    local ok, err = conn:send(request)
    local result, rerr
    if ok then
      result, rerr = read(conn)
      if result ~= nil then
        return result, rerr   -- false, error: a complete answer that reports a failure
      end
      err = rerr
    end
    disconnect()
    -- retry only a reused connection that the other side had closed; a timeout is final
    if fresh or err == "timeout" then
      return nil, "maildictd: " .. tostring(err)
    end
  end
end

local function read_line(c)
  local line, err = c:receive("*l")
  if not line then
    return nil, err
  end
  return line
end

-- L<key>\t<user> -> "found", value | "unknown" | nil, error
local function lookup(key)
  local reply, err = exchange("L" .. escape(key) .. "\t\n", read_line)
  if not reply then
    return nil, err
  end
  local kind, rest = reply:sub(1, 1), reply:sub(2)
  if kind == "O" then
    return "found", unescape(rest)
  elseif kind == "N" then
    return "unknown"
  elseif kind == "F" then
    return nil, "maildictd could not look up " .. key .. ": " .. unescape(rest)
  end
  disconnect()   -- out of step with the server: start over next time
  return nil, "unexpected reply from maildictd to a lookup of " .. key
end

-- ---- a flat JSON object (maildict's answers: strings, numbers, booleans, null) ---------------

local JSON_ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
                       r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 | (cp >> 6), 0x80 | (cp & 0x3F))
  end
  if cp < 0x10000 then
    return string.char(0xE0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3F), 0x80 | (cp & 0x3F))
  end
  return string.char(0xF0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3F), 0x80 | ((cp >> 6) & 0x3F),
                     0x80 | (cp & 0x3F))
end

local function json_string(s, i)   -- s:sub(i, i) == '"'; -> value, index after the string
  local out, pos = {}, i + 1
  while true do
    local j = s:find('["\\]', pos)
    if not j then return nil end
    out[#out + 1] = s:sub(pos, j - 1)
    if s:sub(j, j) == '"' then
      return table.concat(out), j + 1
    end
    local e = s:sub(j + 1, j + 1)
    if e == "u" then
      local cp = tonumber(s:sub(j + 2, j + 5), 16)
      if not cp then return nil end
      local next_pos = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF and s:sub(next_pos, next_pos + 1) == "\\u" then
        local lo = tonumber(s:sub(next_pos + 2, next_pos + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
          next_pos = next_pos + 6
        end
      end
      out[#out + 1] = utf8_char(cp)
      pos = next_pos
    elseif JSON_ESCAPES[e] then
      out[#out + 1] = JSON_ESCAPES[e]
      pos = j + 2
    else
      return nil
    end
  end
end

-- -> { field = "text" } with numbers kept as their text (Dovecot would truncate a Lua number
-- to an integer), booleans as yes/no (what both Dovecot versions make of a Lua boolean) and
-- null fields left out; nil for anything else (nested values included).
local function decode_object(s)
  local fields, i = {}, s:find("%S")
  if not i or s:sub(i, i) ~= "{" then return nil end
  i = s:find("%S", i + 1)
  if i and s:sub(i, i) == "}" then
    return fields
  end
  while i do
    if s:sub(i, i) ~= '"' then return nil end
    local key
    key, i = json_string(s, i)
    if not key then return nil end
    i = s:find("%S", i)
    if not i or s:sub(i, i) ~= ":" then return nil end
    i = s:find("%S", i + 1)
    if not i then return nil end
    local c = s:sub(i, i)
    if c == '"' then
      fields[key], i = json_string(s, i)
      if not fields[key] then return nil end
    else
      local word = s:match("^[%w%.%+%-]+", i)
      if not word then return nil end
      if word == "true" then
        fields[key] = "yes"
      elseif word == "false" then
        fields[key] = "no"
      elseif word == "null" then
        fields[key] = nil
      elseif word:match("^%-?%d+%.?%d*[eE]?[%+%-]?%d*$") then
        fields[key] = word
      else
        return nil
      end
      i = i + #word
    end
    i = s:find("%S", i)
    if not i then return nil end
    c = s:sub(i, i)
    if c == "}" then
      if s:find("%S", i + 1) then return nil end
      return fields
    elseif c ~= "," then
      return nil
    end
    i = s:find("%S", i + 1)
  end
  return nil
end

-- ---- what Dovecot calls ----------------------------------------------------------------------

-- Dovecot 2.4 names the request fields after its new variables (req.protocol) and leaves the
-- 2.3 names (req.service) nil.
local function is_dovecot24(req)
  return req.service == nil and req.protocol ~= nil
end

local function fetch(req, what)
  -- errors are returned, not logged here: Dovecot logs the message of an internal failure
  local outcome, value = lookup("shared/" .. what .. "/" .. req.user)
  if outcome == nil then
    return nil, value
  end
  if outcome == "unknown" then
    return "unknown"
  end
  local fields = decode_object(value)
  if not fields then
    return nil, "maildictd's " .. what .. " answer for this user is not a flat JSON object"
  end
  return "found", fields
end

function auth_passdb_lookup(req)
  local outcome, fields = fetch(req, "passdb")
  if outcome == nil then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, fields
  elseif outcome == "unknown" then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "unknown user"
  end
  -- password keeps its {SCHEME} prefix (Dovecot splits it off); "user" makes the canonical
  -- user@domain Dovecot's user, so user_domain logins open the same mailbox.
  return dovecot.auth.PASSDB_RESULT_OK, fields
end

-- Dovecot 2.3's mail_location "driver:path[:KEY=value...]" in Dovecot 2.4's terms: 2.4 accepts
-- a userdb "mail" field but ignores it; it reads mail_driver, mail_path and friends instead.
local MAIL_KEYS_24 = {
  INDEX = "mail_index_path", CONTROL = "mail_control_path", INBOX = "mail_inbox_path",
  VOLATILEDIR = "mail_volatile_path", ALT = "mail_alt_path",
}

local function mail_location_24(fields, req)
  local location = fields.mail
  fields.mail = nil
  local parts = {}
  for part in (location .. ":"):gmatch("([^:]*):") do
    parts[#parts + 1] = part
  end
  fields.mail_driver = parts[1]
  local path = parts[2] or ""
  -- 2.4 expands ~ in configuration, not in values a userdb returns: expand it with the home
  if path:sub(1, 1) == "~" and fields.home then
    path = fields.home .. path:sub(2)
  end
  if path ~= "" then
    fields.mail_path = path
  end
  -- 2.3 kept a Maildir's INBOX in the Maildir itself. 2.4 does not by default: with an unset
  -- or empty mail_inbox_path it opens a new, empty "<mail_path>/.INBOX", and Debian 13's stock
  -- 10-mail.conf sets mail_inbox_path = /var/mail/%{user} (for its mbox default). Naming the
  -- Maildir itself keeps the INBOX that 2.3 filled (checked with 2.4.1). INBOX= below wins.
  if fields.mail_driver == "maildir" and path ~= "" then
    fields.mail_inbox_path = path
  end
  for n = 3, #parts do
    local k, v = parts[n]:match("^(%u+)=(.*)$")
    if k == "LAYOUT" and v == "fs" then
      fields.mailbox_list_layout = "fs"
    elseif k and MAIL_KEYS_24[k] then
      if v:sub(1, 1) == "~" and fields.home then
        v = fields.home .. v:sub(2)
      end
      fields[MAIL_KEYS_24[k]] = v
    elseif parts[n] ~= "" then
      req:log_warning("mail location option " .. parts[n] ..
                      " has no Dovecot 2.4 equivalent here; set it in dovecot.conf")
    end
  end
end

function auth_userdb_lookup(req)
  local outcome, fields = fetch(req, "userdb")
  if outcome == nil then
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, fields
  elseif outcome == "unknown" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, "unknown user"
  end
  if fields.mail and is_dovecot24(req) then
    mail_location_24(fields, req)
  end
  return dovecot.auth.USERDB_RESULT_OK, fields
end

-- `doveadm user '*'`, `doveadm -A`: maildictd lists the active users (direct children of
-- shared/userdb/, keys only). The mask is doveadm's business, not maildict's.
local ITERATE_NO_VALUE = 8
local PREFIX = "shared/userdb/"

local function read_iteration(c)
  local users = {}
  while true do
    local line, err = read_line(c)
    if not line then
      return nil, err
    end
    if line == "" then
      return users
    end
    local kind = line:sub(1, 1)
    if kind == "O" then
      local key = unescape((line:sub(2):match("^([^\t]*)")))
      if key:sub(1, #PREFIX) == PREFIX then
        users[#users + 1] = key:sub(#PREFIX + 1)
      end
    elseif kind == "F" then
      -- the rest of the reply has been read: the connection stays usable
      return false, "maildictd could not list the users: " .. unescape(line:sub(2))
    else
      disconnect()
      return false, "unexpected reply from maildictd to the user iteration"
    end
  end
end

function auth_userdb_iterate()
  local users, err = exchange("I" .. ITERATE_NO_VALUE .. "\t0\t" .. PREFIX .. "\t\n",
                              read_iteration)
  if not users then
    -- an error, not an empty list: doveadm must not report "no users" during an outage
    error(err)
  end
  return users
end
