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
