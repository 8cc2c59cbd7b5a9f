/// Labels grouped by the size of their reference structure, and the metric means per group: the
/// "small structures" rows of a results table (is the cascade's gain or loss where the
/// structures are small?).
///
/// A label belongs to the group whose [lower, upper) range holds its *reference* volume in mm^3,
/// so that every prediction compared against one reference is grouped the same way. Labels the
/// reference does not hold belong to no group.
public struct SizeGroup: Sendable, Equatable {
    public var name: String
    /// Inclusive lower bound of the reference volume, mm^3.
    public var lowerMM3: Double
    /// Exclusive upper bound of the reference volume, mm^3 (`.infinity` for the last group).
    public var upperMM3: Double

    public init(name: String, lowerMM3: Double, upperMM3: Double) {
        self.name = name
        self.lowerMM3 = lowerMM3
        self.upperMM3 = upperMM3
    }

    /// Small (< 1.5 cm^3: e.g. vermis lobules), medium (1.5-5 cm^3: amygdala, pallidum, Heschl
    /// gyrus) and large (>= 5 cm^3: hippocampus, caudate, putamen, thalamus) brain structures.
    public static let brainStructures = [
        SizeGroup(name: "small (<1.5 cm3)", lowerMM3: 0, upperMM3: 1500),
        SizeGroup(name: "medium (1.5-5 cm3)", lowerMM3: 1500, upperMM3: 5000),
        SizeGroup(name: "large (>=5 cm3)", lowerMM3: 5000, upperMM3: .infinity),
    ]

    public func contains(referenceVolume: Double) -> Bool {
        referenceVolume > 0 && referenceVolume >= lowerMM3 && referenceVolume < upperMM3
    }
}

/// The means of one size group (definitions of the means as in `SegmentationEvaluation`).
public struct SizeGroupSummary: Sendable {
    public var group: SizeGroup
    /// The group's labels, in the evaluation's order.
    public var labels: [Int]
    public var meanDice: Double
    public var meanIoU: Double
    /// Over the finite HD95 values of the group (NaN when none).
    public var meanHD95: Double
    /// Labels of the group whose HD95 is infinite (the prediction misses the structure).
    public var infiniteHD95Count: Int
}

extension SegmentationEvaluation {
    /// The metric means of each group over its labels (a group without labels has NaN means).
    public func sizeGroups(_ groups: [SizeGroup] = SizeGroup.brainStructures) -> [SizeGroupSummary] {
        groups.map { group in
            let members = labels.filter { group.contains(referenceVolume: $0.referenceVolume) }
            return SizeGroupSummary(group: group, labels: members.map(\.label),
                                    meanDice: Self.mean(members.map(\.dice)),
                                    meanIoU: Self.mean(members.map(\.iou)),
                                    meanHD95: Self.mean(members.map(\.hd95).filter(\.isFinite)),
                                    infiniteHD95Count: members.filter { $0.hd95 == .infinity }.count)
        }
    }
}
