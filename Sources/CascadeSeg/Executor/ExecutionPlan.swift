/// Where every activation of one run lives: value shapes for a concrete input, the storage each
/// value uses and where inside it (values computed in place share a storage; a value that only
/// feeds a Concat is written straight into its slice of the Concat's storage), and the arena
/// offsets of those storages.
public struct ExecutionPlan: Sendable {
    public let inputShape: [Int]
    public let shapes: [String: [Int]]
    /// Storage id of each activation value, and its byte offset inside that storage.
    let storageOf: [String: Int]
    let offsetInStorage: [String: Int]
    /// Inputs of Concat nodes that their producer already wrote into the Concat's storage.
    let concatenatedInPlace: Set<String>
    /// Storage id of the scratch space of a node (normalization statistics), by node index.
    let scratchOf: [Int: Int]
    let storageBytes: [Int: Int]
    public let arena: MemoryPlanner.Plan
    /// Weights resident for the whole run.
    public let weightBytes: Int

    /// The blocked convolution reads whole vectors at row ends and masks the lanes outside the
    /// row, so its loads may reach a little before the first and after the last tensor of the
    /// arena; a guard band on both sides keeps those reads inside the allocation.
    static let guardBytes = 4096

    /// Bytes of the arena allocation, guard bands included.
    public var arenaAllocationBytes: Int { arena.arenaBytes + 2 * Self.guardBytes }

    /// Device bytes this run needs at its peak: weights plus the activation arena.
    public var peakBytes: Int { weightBytes + arenaAllocationBytes }
}

extension Network {
    /// Shapes and memory layout for an input of `inputShape` (1 x C x D x H x W).
    public func plan(inputShape: [Int]) throws -> ExecutionPlan {
        let shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: inputShape, constants: constantShapes)
        let outputs = Set(graph.outputs.map(\.name))
        func bytes(_ value: String) throws -> Int {
            guard let n = checkedElementCount(shapes[value] ?? [], limit: 1 << 40) else {
                throw CascadeSegError.budget("tensor '\(value)' of shape \(shapes[value] ?? []) is too large")
            }
            return n * 4
        }
        // Steps: 0 uploads the input, node i runs at step i + 1, step n + 1 downloads outputs.
        let final = order.count + 1
        var lastUse: [String: Int] = [graph.input.name: 0]
        for (i, node) in order.enumerated() {
            for input in node.inputs where !input.isEmpty && constantShapes[input] == nil { lastUse[input] = i + 1 }
            for output in node.outputs { lastUse[output] = max(lastUse[output] ?? 0, i + 1) }
        }
        for o in outputs { lastUse[o] = final }

        var storageOf: [String: Int] = [:]
        var requests: [Int: MemoryPlanner.Request] = [:]
        func newStorage(bytes: Int, first: Int, last: Int) -> Int {
            let id = requests.count
            requests[id] = .init(id: id, bytes: bytes, firstUse: first, lastUse: last)
            return id
        }
        storageOf[graph.input.name] = newStorage(bytes: try bytes(graph.input.name), first: 0, last: lastUse[graph.input.name]!)

        // Concat inputs written in place: produced by a node that does not itself run in place,
        // read by nothing but this Concat, and starting at an offset a sub-buffer may have.
        var uses: [String: Int] = [:]
        for node in order { for input in node.inputs where !input.isEmpty { uses[input, default: 0] += 1 } }
        var producerIndex: [String: Int] = [:]
        for (i, node) in order.enumerated() { for o in node.outputs { producerIndex[o] = i } }
        var concatSlot: [String: (concat: String, offset: Int)] = [:]
        for (i, node) in order.enumerated() {
            guard node.op == .concat, !outputs.contains(node.outputs[0]) else { continue }
            var offset = 0
            for input in node.inputs {
                let size = try bytes(input)
                if let p = producerIndex[input], !runsInPlace[p], uses[input] == 1, !outputs.contains(input),
                   concatSlot[input] == nil, offset % arenaAlignment == 0, Set(node.inputs).count == node.inputs.count {
                    concatSlot[input] = (node.outputs[0], offset)
                }
                offset += size
            }
        }
        var offsetInStorage: [String: Int] = [:]
        var scratchOf: [Int: Int] = [:]
        for (i, node) in order.enumerated() {
            let step = i + 1
            let out = node.outputs[0]
            if let slot = concatSlot[out] {
                // The Concat's storage comes to life when the first of its slices is written.
                if storageOf[slot.concat] == nil {
                    storageOf[slot.concat] = newStorage(bytes: try bytes(slot.concat), first: step, last: lastUse[slot.concat] ?? step)
                }
                storageOf[out] = storageOf[slot.concat]
                offsetInStorage[out] = slot.offset
            } else if storageOf[out] != nil {
                // A Concat whose storage already holds some of its inputs.
            } else if runsInPlace[i], let x = node.input(0), let s = storageOf[x], offsetInStorage[x] == nil,
               requests[s]!.lastUse == step, !outputs.contains(x), try bytes(x) == bytes(out) {
                storageOf[out] = s
                requests[s]!.lastUse = max(requests[s]!.lastUse, lastUse[out] ?? step)
            } else {
                storageOf[out] = newStorage(bytes: try bytes(out), first: step, last: lastUse[out] ?? step)
            }
            if let groups = normGroups[i] {
                scratchOf[i] = newStorage(bytes: normScratchLayout(groups: groups).bytes, first: step, last: step)
            }
        }
        let arena = MemoryPlanner.plan(Array(requests.values), alignment: arenaAlignment)
        return ExecutionPlan(inputShape: inputShape, shapes: shapes, storageOf: storageOf, offsetInStorage: offsetInStorage,
                             concatenatedInPlace: Set(concatSlot.keys), scratchOf: scratchOf,
                             storageBytes: requests.mapValues(\.bytes), arena: arena, weightBytes: weightBytes)
    }

    /// Alignment of every storage in the arena (each one is a sub-buffer, whose origin OpenCL
    /// requires to be a multiple of the device's base address alignment).
    var arenaAlignment: Int { max(context.device.baseAddressAlignBytes, 64) }

    /// Scratch of a normalization node: the partial sums at offset 0, then the statistics (mean
    /// and inverse deviation per group) at `statsOffset`, aligned so it can be its own view.
    func normScratchLayout(groups: Int) -> (partialBytes: Int, statsOffset: Int, bytes: Int) {
        let partialBytes = 2 * groups * tuning.normPartitions * 4  // chunk moments need two floats each
        let statsOffset = (partialBytes + arenaAlignment - 1) / arenaAlignment * arenaAlignment
        return (partialBytes, statsOffset, statsOffset + 2 * groups * 4)
    }
}
