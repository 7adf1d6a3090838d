/// Keys in order of last use, for caches that drop the least recently used entry first (the single-GPU backend's token
/// buckets, the GPU expert-parallel layer's graphs).
struct RecentlyUsed<Key: Hashable> {
    private(set) var order: [Key] = []

    /// Marks `key` as just used, adding it if new.
    mutating func touch(_ key: Key) {
        if let at = order.firstIndex(of: key) { order.remove(at: at) }
        order.append(key)
    }

    /// Removes and returns the least recently used key other than `keep`; nil when there is none.
    mutating func removeOldest(except keep: Key? = nil) -> Key? {
        guard let at = order.firstIndex(where: { $0 != keep }) else { return nil }
        return order.remove(at: at)
    }

    mutating func removeAll() { order.removeAll() }

    /// `touch(key)`, then removes and returns the least recently used key when more than `capacity` keys (≥ 1) are held.
    mutating func use(_ key: Key, capacity: Int) -> Key? {
        touch(key)
        return order.count > max(1, capacity) ? removeOldest() : nil
    }
}
