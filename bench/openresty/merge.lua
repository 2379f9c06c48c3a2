-- GET /merged of the OpenResty-style peer (bench/openresty/nginx.conf): the
-- three calls at once with ngx.location.capture_multi, each body decoded with
-- cjson, the objects deep-merged the way fanout merges them, in declaration
-- order: objects merge key by key, recursively; in any other collision the
-- later body wins; a key keeps the place where it first appeared.
--
-- A Lua table has no key order, so the order of the top-level keys is read
-- from the body text (top_keys, a scan of the body that cjson has just
-- accepted), and the answer is written key by key, each value encoded by
-- cjson. Nested objects come out in cjson's (table) order, and cjson writes
-- "/" as "\/" and numbers with 14 significant digits: bodies with nested
-- objects, slashes or long numbers would differ from fanout's bytes; the
-- benchmark's bodies (flat objects of plain strings) come out byte for byte
-- the same, which bench/run.sh checks before measuring.
local cjson = require "cjson.safe"
local capture_multi = ngx.location.capture_multi
local sub, byte = string.sub, string.byte
local concat, type, next = table.concat, type, next
local encode, decode = cjson.encode, cjson.decode

local CALLS = { { "/_call/one" }, { "/_call/two" }, { "/_call/three" } }
local QUOTE, BACKSLASH, COMMA = byte('"'), byte("\\"), byte(",")
local OPEN_OBJ, OPEN_ARR, CLOSE_OBJ, CLOSE_ARR = byte("{"), byte("["), byte("}"), byte("]")

local function is_object(v)
  -- cjson decodes both {} and [] to tables; an empty table is taken as an
  -- object, a table with [1] as an array.
  return type(v) == "table" and v[1] == nil
end

-- The keys of the top-level object of s (valid JSON, as cjson decoded it),
-- in order. A byte loop (LuaJIT compiles it; pattern searches it does not).
local function top_keys(s)
  local keys, n = {}, 0
  local depth, expect_key = 0, false
  local in_string, key_start, escaped = false, 0, false
  local i, len = 1, #s
  while i <= len do
    local c = byte(s, i)
    if in_string then
      if c == BACKSLASH then
        escaped = true
        i = i + 1
      elseif c == QUOTE then
        in_string = false
        if key_start > 0 then
          n = n + 1
          keys[n] = escaped and decode(sub(s, key_start, i)) or sub(s, key_start + 1, i - 1)
          key_start = 0
        end
      end
    elseif c == QUOTE then
      in_string = true
      if depth == 1 and expect_key then
        key_start, escaped, expect_key = i, false, false
      end
    elseif c == OPEN_OBJ or c == OPEN_ARR then
      depth = depth + 1
      expect_key = depth == 1
    elseif c == CLOSE_OBJ or c == CLOSE_ARR then
      depth = depth - 1
    elseif c == COMMA and depth == 1 then
      expect_key = true
    end
    i = i + 1
  end
  return keys
end

local function merge_into(target, source)
  for k, v in next, source do
    local old = target[k]
    if is_object(v) and is_object(old) then
      merge_into(old, v)
    else
      target[k] = v
    end
  end
end

local function fail(message)
  ngx.status = 502
  ngx.header["Content-Type"] = "text/plain"
  ngx.say(message)
  return ngx.exit(502)
end

local _M = {}

function _M.handler()
  local responses = { capture_multi(CALLS) }
  local merged, order, n, seen = {}, {}, 0, {}
  for i = 1, #CALLS do
    local res = responses[i]
    if not res or res.status >= 300 or res.truncated then
      return fail(CALLS[i][1] .. ": status " .. tostring(res and res.status))
    end
    local part = decode(res.body)
    if not is_object(part) then
      return fail(CALLS[i][1] .. ": not a JSON object")
    end
    local keys = top_keys(res.body)
    for j = 1, #keys do
      local k = keys[j]
      if not seen[k] then
        seen[k] = true
        n = n + 1
        order[n] = k
      end
    end
    merge_into(merged, part)
  end
  local out = { "{" }
  for j = 1, n do
    local k = order[j]
    out[#out + 1] = (j > 1 and "," or "") .. encode(k) .. ":" .. encode(merged[k])
  end
  out[#out + 1] = "}"
  local body = concat(out)
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

_M.top_keys = top_keys
return _M
