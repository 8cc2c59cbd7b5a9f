/// Places the tensors of one network run in a single device arena so that tensors alive at the
/// same time never overlap, and the arena stays small. Pure Swift and device-independent.
///
/// Strategy: greedy by size (as TensorFlow Lite's arena planner): the largest tensors are placed
/// first, each at the lowest-waste gap among the tensors whose lifetimes overlap its own.
public enum MemoryPlanner {
    /// One tensor: `bytes` long, alive from step `firstUse` to `lastUse`, both inclusive.
    public struct Request: Equatable, Sendable {
        public var id: Int
        public var bytes: Int
        public var firstUse: Int
        public var lastUse: Int
        public init(id: Int, bytes: Int, firstUse: Int, lastUse: Int) {
            self.id = id; self.bytes = bytes; self.firstUse = firstUse; self.lastUse = lastUse
        }
        func overlaps(_ other: Request) -> Bool { firstUse <= other.lastUse && other.firstUse <= lastUse }
    }

    public struct Plan: Equatable, Sendable {
        /// Byte offset of each request, by id.
        public var offsets: [Int: Int]
        public var arenaBytes: Int
    }

    public static func plan(_ requests: [Request], alignment: Int) -> Plan {
        precondition(alignment > 0)
        func aligned(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }
        let order = requests.sorted { ($0.bytes, -$0.firstUse, -$0.id) > ($1.bytes, -$1.firstUse, -$1.id) }
        var placed: [(request: Request, offset: Int)] = []
        var offsets: [Int: Int] = [:]
        var arena = 0
        for request in order {
            let size = aligned(max(request.bytes, 1))
            let neighbours = placed.filter { $0.request.overlaps(request) }.sorted { $0.offset < $1.offset }
            var best: (offset: Int, waste: Int)? = nil
            var cursor = 0
            for n in neighbours {
                let gap = n.offset - cursor
                if gap >= size, best == nil || gap - size < best!.waste { best = (cursor, gap - size) }
                cursor = max(cursor, n.offset + aligned(max(n.request.bytes, 1)))
            }
            let offset = best?.offset ?? cursor
            placed.append((request, offset))
            offsets[request.id] = offset
            arena = max(arena, offset + size)
        }
        return Plan(offsets: offsets, arenaBytes: arena)
    }

    /// The smallest arena any placement could use: the largest total of simultaneously live
    /// (aligned) bytes. Used by tests as a lower bound.
    public static func lowerBound(_ requests: [Request], alignment: Int) -> Int {
        let steps = Set(requests.flatMap { [$0.firstUse, $0.lastUse] })
        return steps.map { step in
            requests.filter { $0.firstUse <= step && step <= $0.lastUse }
                .reduce(0) { $0 + ($1.bytes + alignment - 1) / alignment * alignment }
        }.max() ?? 0
    }
}
