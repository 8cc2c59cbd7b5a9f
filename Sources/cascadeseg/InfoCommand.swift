import CascadeSeg
import Foundation

/// `cascadeseg info MODEL.cseg`: what a model file holds.
enum InfoCommand {
    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: [], flags: [])
        guard args.positionals.count == 1 else { throw CascadeSegError.usage("usage: cascadeseg info MODEL.cseg") }
        let model = try ModelFile(contentsOf: args.positionals[0])
        let m = model.metadata
        print("model:        \(m.name)")
        if !m.description.isEmpty { print("description:  \(m.description)") }
        if !m.license.isEmpty { print("license:      \(m.license)") }
        print("input:        \(m.input.channels) channel(s), normalization \(m.input.normalization.kind)")
        print("labels:       " + m.labels.map { "\($0.id)=\($0.name)" }.joined(separator: ", "))
        for (i, stage) in m.stages.enumerated() {
            print("stage \(i + 1):      graph '\(stage.graph)' at \(stage.spacingMM.map { String(format: "%g", $0) }.joined(separator: " x ")) mm")
        }
        if let c = m.cascade {
            print("cascade:      stage 1 '\(c.stage1)', stage 2 '\(c.stage2)', margin \(c.marginMM) mm, min ROI \(c.minROISize), \(c.labelGroups.count) label group(s), \(c.priors?.count ?? 0) prior box(es)")
        }
        for g in model.graphs {
            var ops: [String: Int] = [:]
            for n in g.nodes { ops[n.op.rawValue, default: 0] += 1 }
            let params = Set(g.nodes.flatMap(\.inputs)).compactMap { model.weights[$0]?.count }.reduce(0, +)
            print("graph '\(g.name)': input \(g.input.shape) multiple of \(g.sizeMultiple), \(g.nodes.count) nodes, \(params) parameters")
            print("  ops: " + ops.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))
            print("  outputs: " + g.outputs.map { "\($0.name) \($0.shape)" }.joined(separator: ", "))
        }
        if let s = model.storage {
            print("parameters:   \(model.parameterCount)")
            print(String(format: "size:         %d bytes stored (%@ weights), %d bytes raw float32 (%.3fx), file %d bytes",
                         s.storedBytes, s.weightTypes.sorted().joined(separator: "+"), s.rawFloat32Bytes,
                         Double(s.storedBytes) / Double(max(s.rawFloat32Bytes, 1)), s.fileBytes))
        }
    }
}
