/// 3-D connected-component labelling of binary masks and label maps.
///
/// Run-based union-find, O(n): one pass cuts every x row into runs (maximal stretches of one
/// foreground value); each run is united with the runs of the same value in the already
/// visited neighbouring rows that touch it, found by a merge-like sweep of the two sorted run
/// lists: rows (y-1, z) and (y, z-1), plus (y-1, z-1) and (y+1, z-1) for 18- and
/// 26-connectivity; runs in rows that differ along one axis touch when their x ranges overlap
/// (6) or overlap after growing by one voxel (18, 26); runs in rows that differ along two axes
/// touch when their x ranges overlap (18) or overlap after growing by one voxel (26). Union by
/// smaller index with path halving. A last pass over the runs numbers the components, counts
/// voxels, takes bounding boxes and fills the component map.
///
/// In a label map, two neighbouring voxels are connected only when they hold the same label,
/// and voxels equal to `background` belong to no component.
///
/// Components are numbered 0, 1, ... in the scan order (x fastest, then y, then z) of their
/// first voxel, so the result does not depend on how the union-find merged.
public enum ConnectedComponents {
    /// Which neighbours touch: faces (6), faces and edges (18), or faces, edges and corners (26).
    public enum Connectivity: Int, Sendable, CaseIterable {
        case six = 6, eighteen = 18, twentySix = 26

        /// The neighbour offsets (dx, dy, dz) visited before a voxel in scan order.
        public var backwardOffsets: [SIMD3<Int>] {
            var result = [SIMD3<Int>]()
            for dz in -1...0 {
                for dy in -1...1 {
                    for dx in -1...1 {
                        let d = SIMD3(dx, dy, dz)
                        let before = dz < 0 || (dz == 0 && (dy < 0 || (dy == 0 && dx < 0)))
                        let order = abs(dx) + abs(dy) + abs(dz)
                        let touches = self == .six ? order == 1 : self == .eighteen ? order <= 2 : true
                        if before && touches { result.append(d) }
                    }
                }
            }
            return result
        }
    }

    /// One connected component.
    public struct Component: Equatable, Sendable {
        /// The label its voxels hold (1 for a binary mask).
        public var label: Int
        public var voxelCount: Int
        /// The tight bounding box of its voxels.
        public var box: VoxelBox
        /// The index of its first voxel in scan order.
        public var firstVoxel: Int

        public init(label: Int, voxelCount: Int, box: VoxelBox, firstVoxel: Int) {
            self.label = label; self.voxelCount = voxelCount; self.box = box; self.firstVoxel = firstVoxel
        }
    }

    /// The result: the components and, per voxel, its component number plus one (0 = background).
    public struct Labeling: Equatable, Sendable {
        public var size: SIMD3<Int>
        public var components: [Component]
        public var componentMap: [Int32]

        /// The components of each label, in component order.
        public var componentsByLabel: [Int: [Component]] { Dictionary(grouping: components, by: \.label) }
    }

    /// Components of a binary mask (`true` = foreground); every component has label 1.
    public static func label(mask: [Bool], size: SIMD3<Int>, connectivity: Connectivity = .twentySix) -> Labeling {
        precondition(mask.count == size.x * size.y * size.z, "\(mask.count) voxels do not fill a \(size) grid")
        return mask.withUnsafeBufferPointer { run($0, background: false, size: size, connectivity: connectivity, labelOf: { _ in 1 }) }
    }

    /// Components of each label of a label map (voxels equal to `background` excluded).
    public static func label(labelMap: [Int32], size: SIMD3<Int>, connectivity: Connectivity = .twentySix,
                             background: Int32 = 0) -> Labeling {
        precondition(labelMap.count == size.x * size.y * size.z, "\(labelMap.count) voxels do not fill a \(size) grid")
        return labelMap.withUnsafeBufferPointer { run($0, background: background, size: size, connectivity: connectivity, labelOf: { Int($0) }) }
    }

    /// Components of each label of a label map held as floats (e.g. an ArgMax output); labels
    /// are the integral values, voxels equal to `background` excluded. Values must be integers
    /// in Int32 range.
    public static func label(labelMap: [Float], size: SIMD3<Int>, connectivity: Connectivity = .twentySix,
                             background: Float = 0) -> Labeling {
        label(labelMap: labelMap.map { Int32($0) }, size: size, connectivity: connectivity, background: Int32(background))
    }

    // MARK: - Internals

    static func run<T: Equatable>(_ values: UnsafeBufferPointer<T>, background: T, size: SIMD3<Int>,
                                  connectivity: Connectivity, labelOf: (T) -> Int) -> Labeling {
        let (nx, ny, nz) = (size.x, size.y, size.z)
        let rows = ny * nz

        // Runs: [start, end) along x; the runs of row r are rowFirstRun[r] ..< rowFirstRun[r + 1].
        var runStart = [Int32](), runEnd = [Int32]()
        var rowFirstRun = [Int](repeating: 0, count: rows + 1)
        for r in 0..<rows {
            rowFirstRun[r] = runStart.count
            let row = values.baseAddress! + r * nx
            var x = 0
            while x < nx {
                let v = row[x]
                if v == background { x += 1; continue }
                let s = x
                x += 1
                while x < nx && row[x] == v { x += 1 }
                runStart.append(Int32(s)); runEnd.append(Int32(x))
            }
        }
        rowFirstRun[rows] = runStart.count
        let runCount = runStart.count

        // Unions with the runs of earlier neighbouring rows: (dy, dz, growth of the x range).
        let neighbours: [(dy: Int, dz: Int, grow: Int32)]
        switch connectivity {
        case .six: neighbours = [(-1, 0, 0), (0, -1, 0)]
        case .eighteen: neighbours = [(-1, 0, 1), (0, -1, 1), (-1, -1, 0), (1, -1, 0)]
        case .twentySix: neighbours = [(-1, 0, 1), (0, -1, 1), (-1, -1, 1), (1, -1, 1)]
        }
        var parent = [Int32](unsafeUninitializedCapacity: runCount) { p, initialized in
            for i in 0..<runCount { p[i] = Int32(i) }
            initialized = runCount
        }
        parent.withUnsafeMutableBufferPointer { parent in
            runStart.withUnsafeBufferPointer { start in
                runEnd.withUnsafeBufferPointer { end in
                    @inline(__always) func find(_ i: Int32) -> Int32 {
                        var i = i
                        while parent[Int(i)] != i {
                            let grand = parent[Int(parent[Int(i)])]
                            parent[Int(i)] = grand
                            i = grand
                        }
                        return i
                    }
                    for z in 0..<nz {
                        for y in 0..<ny {
                            let r = y + ny * z
                            let a0 = rowFirstRun[r], a1 = rowFirstRun[r + 1]
                            guard a0 < a1 else { continue }
                            let rowA = values.baseAddress! + r * nx
                            for n in neighbours {
                                let yy = y + n.dy, zz = z + n.dz
                                guard yy >= 0, yy < ny, zz >= 0 else { continue }
                                let r2 = yy + ny * zz
                                let b1 = rowFirstRun[r2 + 1]
                                var j0 = rowFirstRun[r2]
                                guard j0 < b1 else { continue }
                                let rowB = values.baseAddress! + r2 * nx
                                for i in a0..<a1 {
                                    let s = start[i], e = end[i]
                                    // B runs ending (grown) before this run starts touch no later run either.
                                    while j0 < b1 && end[j0] + n.grow <= s { j0 += 1 }
                                    var j = j0
                                    while j < b1 && start[j] < e + n.grow {
                                        if rowA[Int(s)] == rowB[Int(start[j])] {
                                            let p = find(Int32(i)), q = find(Int32(j))
                                            if p < q { parent[Int(q)] = p } else if q < p { parent[Int(p)] = q }
                                        }
                                        j += 1
                                    }
                                }
                            }
                        }
                    }
                    for i in 0..<runCount { parent[i] = find(Int32(i)) }
                }
            }
        }

        // Number the components by their first run (scan order), count, box, fill the map.
        var componentOfRoot = [Int32](repeating: -1, count: runCount)
        var components = [Component]()
        var lower = [SIMD3<Int>](), upper = [SIMD3<Int>](), counts = [Int]()
        var map = [Int32](repeating: 0, count: nx * ny * nz)
        map.withUnsafeMutableBufferPointer { mp in
            for z in 0..<nz {
                for y in 0..<ny {
                    let r = y + ny * z
                    for i in rowFirstRun[r]..<rowFirstRun[r + 1] {
                        let root = Int(parent[i])
                        var c = Int(componentOfRoot[root])
                        let s = Int(runStart[i]), e = Int(runEnd[i])
                        if c < 0 {
                            c = components.count
                            componentOfRoot[root] = Int32(c)
                            components.append(Component(label: labelOf(values[r * nx + s]), voxelCount: 0,
                                                        box: VoxelBox(lower: .zero, upper: .zero), firstVoxel: r * nx + s))
                            lower.append(SIMD3(s, y, z)); upper.append(SIMD3(e, y + 1, z + 1)); counts.append(0)
                        }
                        counts[c] += e - s
                        if s < lower[c].x { lower[c].x = s }
                        if e > upper[c].x { upper[c].x = e }
                        if y < lower[c].y { lower[c].y = y }
                        if y + 1 > upper[c].y { upper[c].y = y + 1 }
                        upper[c].z = z + 1
                        let id = Int32(c + 1)
                        for k in (r * nx + s)..<(r * nx + e) { mp[k] = id }
                    }
                }
            }
        }
        for c in components.indices {
            components[c].voxelCount = counts[c]
            components[c].box = VoxelBox(lower: lower[c], upper: upper[c])
        }
        return Labeling(size: size, components: components, componentMap: map)
    }
}
