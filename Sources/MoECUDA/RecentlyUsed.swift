/// Keys in order of last use, for caches that drop the least recently used entry past a capacity.
struct RecentlyUsed<Key: Hashable> {
    private(set) var order: [Key] = []

    /// Marks `key` as just used (adding it if new); returns the least recently used key when the set now holds more
    /// than `capacity` keys (≥ 1), after removing it.
    mutating func use(_ key: Key, capacity: Int) -> Key? {
        if let at = order.firstIndex(of: key) { order.remove(at: at) }
        order.append(key)
        guard order.count > max(1, capacity) else { return nil }
        return order.removeFirst()
    }
}
