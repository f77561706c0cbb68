-- wrk: each request carries the next session cookie of the list in $COOKIES_FILE (one
-- "name=value" a line), so that many distinct patrons, not one, hit the gateway.
local cookies = {}
for line in io.lines(os.getenv("COOKIES_FILE")) do
  if #line > 0 then cookies[#cookies + 1] = line end
end
local next_one = 0

-- Each wrk thread starts at its own place in the list.
function setup(thread)
  thread:set("offset", math.random(#cookies))
end

function init(args)
  next_one = offset or 0
end

function request()
  next_one = next_one % #cookies + 1
  return wrk.format("GET", nil, { ["Cookie"] = cookies[next_one] })
end
