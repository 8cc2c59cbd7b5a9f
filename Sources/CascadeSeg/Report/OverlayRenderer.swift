/// Draws axial, coronal and sagittal slices of an image side by side, with labels blended in
/// colour and ROI boxes outlined, for checking a segmentation at a glance (`--overlay`).
///
/// Array axes are x (left-right), y (posterior-anterior), z (inferior-superior) in voxel order;
/// rows are drawn so that increasing y (axial) or z (coronal, sagittal) points up. Intensities are
/// windowed to the image's 1st-99th percentile.
public enum OverlayRenderer {
    /// Distinct colours, cycled by label id (label 0 is not drawn).
    static let palette: [(UInt8, UInt8, UInt8)] = [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    ]
    static let boxColour: (UInt8, UInt8, UInt8) = (255, 255, 0)

    public static func colour(of label: Int32) -> (UInt8, UInt8, UInt8) { palette[Int(label - 1) % palette.count] }

    /// Returns RGB bytes and the canvas size. `center` picks the slices (default: the centre of
    /// the labelled voxels, or of the volume when there are none).
    public static func render(image: Volume, labels: [Int32], boxes: [VoxelBox] = [], center: SIMD3<Int>? = nil,
                              alpha: Double = 0.5) throws -> (rgb: [UInt8], width: Int, height: Int) {
        let s = image.size
        guard labels.count == image.voxelCount else {
            throw CascadeSegError.invalidInput("\(labels.count) labels for a \(s.x)x\(s.y)x\(s.z) image")
        }
        var c = center ?? SIMD3(s.x / 2, s.y / 2, s.z / 2)
        if center == nil {
            var sum = SIMD3<Int>.zero, n = 0
            for i in labels.indices where labels[i] != 0 {
                sum &+= SIMD3(i % s.x, (i / s.x) % s.y, i / (s.x * s.y)); n += 1
            }
            if n > 0 { c = sum / SIMD3(repeating: n) }
        }
        let sorted = image.voxels.filter(\.isFinite).sorted()
        let lo = sorted.isEmpty ? 0 : sorted[sorted.count / 100], hi = sorted.isEmpty ? 1 : sorted[(sorted.count * 99) / 100]
        let scale = hi > lo ? 255 / (hi - lo) : 0

        // Panels: axial (x across, y up) at z = c.z; coronal (x across, z up) at y = c.y;
        // sagittal (y across, z up) at x = c.x.
        let panels: [(width: Int, height: Int, voxel: (Int, Int) -> SIMD3<Int>)] = [
            (s.x, s.y, { u, v in SIMD3(u, s.y - 1 - v, c.z) }),
            (s.x, s.z, { u, v in SIMD3(u, c.y, s.z - 1 - v) }),
            (s.y, s.z, { u, v in SIMD3(c.x, u, s.z - 1 - v) }),
        ]
        let gap = 4
        let width = panels.reduce(0) { $0 + $1.width } + gap * (panels.count - 1)
        let height = panels.map(\.height).max()!
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        var left = 0
        for (index, panel) in panels.enumerated() {
            for v in 0..<panel.height {
                for u in 0..<panel.width {
                    let p = panel.voxel(u, v)
                    let i = image.index(p.x, p.y, p.z)
                    let grey = Double(max(0, min(255, (image.voxels[i] - lo) * scale)))
                    var pixel = (grey, grey, grey)
                    if labels[i] != 0 {
                        let k = colour(of: labels[i])
                        pixel = ((1 - alpha) * grey + alpha * Double(k.0), (1 - alpha) * grey + alpha * Double(k.1),
                                 (1 - alpha) * grey + alpha * Double(k.2))
                    }
                    if boxes.contains(where: { onOutline($0, p, panel: index) }) {
                        pixel = (Double(boxColour.0), Double(boxColour.1), Double(boxColour.2))
                    }
                    let o = (v * width + left + u) * 3
                    rgb[o] = UInt8(pixel.0.rounded()); rgb[o + 1] = UInt8(pixel.1.rounded()); rgb[o + 2] = UInt8(pixel.2.rounded())
                }
            }
            left += panel.width + gap
        }
        return (rgb, width, height)
    }

    /// Whether voxel `p` of a panel lies on the box's outline within that panel's plane.
    static func onOutline(_ box: VoxelBox, _ p: SIMD3<Int>, panel: Int) -> Bool {
        guard box.contains(x: p.x, y: p.y, z: p.z) else { return false }
        let axes = panel == 0 ? (0, 1) : panel == 1 ? (0, 2) : (1, 2)
        func edge(_ axis: Int) -> Bool { p[axis] == box.lower[axis] || p[axis] == box.upper[axis] - 1 }
        return edge(axes.0) || edge(axes.1)
    }
}
