import Testing

@testable import MoECUDA

/// The policy behind the GPU expert-parallel layer's bucket cache: the least recently used key goes first, a use
/// refreshes a key, and the capacity is at least one.
@Test func recentlyUsedDropsTheLeastRecentlyUsedKeyPastItsCapacity() {
    var recent = RecentlyUsed<Int>()
    #expect(recent.use(1, capacity: 3) == nil)
    #expect(recent.use(2, capacity: 3) == nil)
    #expect(recent.use(3, capacity: 3) == nil)
    #expect(recent.use(1, capacity: 3) == nil)  // a use refreshes: 2 is now the oldest
    #expect(recent.use(4, capacity: 3) == 2)
    #expect(recent.order == [3, 1, 4])
    #expect(recent.use(4, capacity: 3) == nil)  // using the newest changes nothing
    #expect(recent.use(5, capacity: 3) == 3)
    #expect(recent.use(6, capacity: 0) == 1 && recent.order.count == 3)  // capacity below one counts as one: drops one per use
    var single = RecentlyUsed<String>()
    #expect(single.use("a", capacity: 0) == nil)
    #expect(single.use("b", capacity: 0) == "a" && single.order == ["b"])
}

/// The single-GPU backend's use: touch on every use, drop the oldest on demand (past its bucket limit, or out of
/// memory) until none is left.
@Test func recentlyUsedTouchesAndDropsOnDemand() {
    var recent = RecentlyUsed<Int>()
    for key in [8, 1, 32, 1] { recent.touch(key) }
    #expect(recent.order == [8, 32, 1])
    #expect(recent.removeOldest() == 8 && recent.removeOldest() == 32 && recent.removeOldest() == 1)
    #expect(recent.removeOldest() == nil)
    recent.touch(4)
    recent.removeAll()
    #expect(recent.order.isEmpty)
}

/// Out of memory while making a graph for one size: the oldest other size goes first, never the one in use.
@Test func theOldestOtherKeyGoesFirstAndTheKeptOneNever() {
    var recent = RecentlyUsed<Int>()
    for key in [4, 8, 1] { recent.touch(key) }
    #expect(recent.removeOldest(except: 4) == 8)
    #expect(recent.removeOldest(except: 4) == 1)
    #expect(recent.removeOldest(except: 4) == nil && recent.order == [4])
    #expect(recent.removeOldest(except: nil) == 4 && recent.order.isEmpty)
}

/// The backend's out-of-memory retry: each out-of-memory failure evicts once and retries; with nothing left to evict
/// the caller's error names what did not fit; any other failure passes through at once, evicting nothing.
@Test func outOfMemoryRetriesEvictUntilItFitsOrNothingIsLeft() throws {
    let outOfMemory = CUDAError.driver(call: "cuGraphInstantiateWithFlags", code: 2, name: "CUDA_ERROR_OUT_OF_MEMORY", message: "out of memory")
    let exhausted = CUDAError.outOfMemory(what: "the graph of a 4-token forward", bytes: nil, free: 0, total: 1, advice: "smaller")
    // Fits after two evictions.
    var attempts = 0, evictions = 0
    let value = try retryingOutOfMemory({ () throws(CUDAError) -> Int in
        attempts += 1
        if attempts < 3 { throw outOfMemory }
        return 42
    }, evict: { evictions += 1; return true }, exhausted: { exhausted })
    #expect(value == 42 && attempts == 3 && evictions == 2)
    // Never fits: the error says what did not fit, after evicting all there was.
    var left = 2
    #expect(throws: exhausted) {
        try retryingOutOfMemory({ () throws(CUDAError) -> Int in throw outOfMemory },
                                           evict: { defer { left -= 1 }; return left > 0 }, exhausted: { exhausted })
    }
    #expect(left == -1)
    // Another failure: no eviction, the same error.
    var evicted = false
    #expect(throws: CUDAError.invalidArgument("bad")) {
        try retryingOutOfMemory({ () throws(CUDAError) -> Int in throw .invalidArgument("bad") },
                                           evict: { evicted = true; return true }, exhausted: { exhausted })
    }
    #expect(!evicted)
}
