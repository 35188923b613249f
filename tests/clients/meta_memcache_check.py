"""Drives the server with meta-memcache (PyPI `meta-memcache`, a meta-protocol
client written elsewhere): plain reads and writes, base64 keys, CAS, counters,
and its herd-control policies (lease on miss, stale on invalidation, recache).

Usage: python meta_memcache_check.py PORT   (exits non-zero on the first failure)
"""
import sys

from meta_memcache import (
    CacheClient,
    Key,
    LeasePolicy,
    RecachePolicy,
    ServerAddress,
    StalePolicy,
    connection_pool_factory_builder,
)

port = int(sys.argv[1])


def client():
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host="127.0.0.1", port=port)],
        connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=5),
    )


a, b = client(), client()
checks = 0


def check(what, got, want):
    global checks
    checks += 1
    if got != want:
        sys.exit(f"FAIL {what}: got {got!r}, want {want!r}")


# Plain values, serialized by the client (it picks client flags per type).
check("set", a.set(Key("k:str"), "hello", ttl=60), True)
check("get", b.get(Key("k:str")), "hello")
check("set int", a.set(Key("k:int"), 42, ttl=60), True)
check("get int", b.get(Key("k:int")), 42)
check("set dict", a.set(Key("k:obj"), {"x": [1, 2]}, ttl=60), True)
check("get dict", b.get(Key("k:obj")), {"x": [1, 2]})
check("miss", b.get(Key("k:none")), None)
# Keys the client sends in base64 (`b`): non-ASCII and very long ones.
for key in ["ключ", "k" * 300]:
    check(f"set {key[:8]}", a.set(Key(key), "v-" + key[:4], ttl=60), True)
    check(f"get {key[:8]}", b.get(Key(key)), "v-" + key[:4])
check("multi_get", b.multi_get([Key("k:str"), Key("k:none"), Key("k:int")]),
      {Key("k:str"): "hello", Key("k:none"): None, Key("k:int"): 42})
check("touch", a.touch(Key("k:str"), ttl=120), True)

# CAS.
value, cas = b.get_cas(Key("k:str"))
check("get_cas", value, "hello")
new_cas = b.set_cas(Key("k:str"), "v2", cas_token=cas, ttl=60)
check("set_cas returns a new token", isinstance(new_cas, int) and new_cas != cas, True)
check("set_cas stale token", a.set_cas(Key("k:str"), "v3", cas_token=cas, ttl=60), None)
check("after cas", a.get(Key("k:str")), "v2")
check("get_cas token", a.get_cas(Key("k:str")), ("v2", new_cas))

# Counters.
check("delta miss", a.delta(Key("cnt"), 1), False)
check("delta_initialize", a.delta_initialize(Key("cnt"), 1, initial_value=10, initial_ttl=60), True)
check("delta_and_get", a.delta_and_get(Key("cnt"), 5), 15)
check("delta_and_get down", a.delta_and_get(Key("cnt"), -20), 0)

# Delete.
check("delete", a.delete(Key("k:int")), True)
check("deleted", b.get(Key("k:int")), None)

# Lease on miss: the first client wins (a miss, go fill), the other waits and
# gets the value once the winner stores it.
lease = LeasePolicy(ttl=30, miss_retries=3, miss_retry_wait=0.05)
value, cas = a.get_or_lease_cas(Key("lease"), lease_policy=lease)
check("lease winner sees a miss", value, None)
check("winner refills", a.set(Key("lease"), "filled", ttl=60, cas_token=cas), True)
check("loser gets the value", b.get_or_lease(Key("lease"), lease_policy=lease), "filled")

# Stale on invalidation: delete marks the item stale; one reader wins (miss),
# the others keep getting the stale value until it is refilled.
stale = StalePolicy(mark_stale_on_deletion_ttl=30, mark_stale_on_cas_mismatch=True)
check("set for stale", a.set(Key("st"), "old", ttl=60), True)
check("invalidate", a.delete(Key("st"), stale_policy=stale), True)
value, cas = a.get_or_lease_cas(Key("st"), lease_policy=lease)
check("stale winner sees a miss", value, None)
check("stale loser gets the stale value", b.get_or_lease(Key("st"), lease_policy=lease), "old")
check("refill", a.set(Key("st"), "new", ttl=60, cas_token=cas, stale_policy=stale), True)
check("after refill", b.get(Key("st")), "new")

# Recache: when the TTL left is under the policy's, one client wins early.
check("set short", a.set(Key("rc"), "r1", ttl=10), True)
recache = RecachePolicy(ttl=30)
value, cas = a.get_or_lease_cas(Key("rc"), lease_policy=lease, recache_policy=recache)
check("recache winner sees a miss", value, None)
check("recache loser keeps the value",
      b.get_or_lease(Key("rc"), lease_policy=lease, recache_policy=recache), "r1")

print(f"meta-memcache: {checks} checks passed")
