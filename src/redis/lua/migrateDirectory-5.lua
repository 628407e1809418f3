--[[
  Moves the customer directory from one entry per tenant (version 1) to one entry per product
  subscription (version 2), at once, so no event applies to a half-moved directory. Idempotent: it does
  nothing once the version key says 2. The version 1 hashes are left as they were (a rollback reads them).

  KEYS[1] version-1 directory (hash: tenant → entry JSON)   KEYS[2] version-1 index (identity → tenant)
  KEYS[3] subscriptions (hash: tenant␟product → entry JSON) KEYS[4] subscription index (identity → tenant␟product)
  KEYS[5] the directory's version (string)
  ARGV[1] the field separator (␟)
  Returns the number of entries moved, or -1 when the directory was already at version 2.
  An index field is moved only when it names the product of the tenant's entry: `account:` and
  `identifier:` carry their product; a `license:` field must be the entry's own license (a version 1
  directory kept the latest registration only, so an older product's license names no entry).
]]
if redis.call('GET', KEYS[5]) == '2' then
  return -1
end
local sep = ARGV[1]
local products = {}
local entries = redis.call('HGETALL', KEYS[1])
local moved = 0
for i = 1, #entries, 2 do
  local tenant = entries[i]
  local entry = cjson.decode(entries[i + 1])
  local product = entry.productCode or ''
  products[tenant] = { product = product, license = entry.licenseArn }
  -- HSETNX: an entry a version 2 writer made meanwhile is newer than this one.
  moved = moved + redis.call('HSETNX', KEYS[3], tenant .. sep .. product, entries[i + 1])
end
local index = redis.call('HGETALL', KEYS[2])
for i = 1, #index, 2 do
  local field = index[i]
  local known = products[index[i + 1]]
  if known then
    local product
    if string.sub(field, 1, 8) == 'license:' then
      if known.license == string.sub(field, 9) then product = known.product end
    else
      product = string.match(field, '^%a+:(.*):[^:]*$')
    end
    if product then redis.call('HSETNX', KEYS[4], field, index[i + 1] .. sep .. product) end
  end
end
redis.call('SET', KEYS[5], '2')
return moved
