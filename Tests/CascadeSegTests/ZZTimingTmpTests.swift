import Foundation
import XCTest
@testable import CascadeSeg
final class ZZTimingTmpTests: XCTestCase {
    func testTiming() throws {
        func t(_ name: String, _ f: () throws -> Void) rethrows { let s = Date(); try f(); print("TIMING \(name): \(Date().timeIntervalSince(s))") }
        var img: NiftiImage! = nil
        try t("read ch2") { img = try NiftiImage(contentsOf: "/usr/share/mricron/templates/ch2.nii.gz") }
        try t("inflate only") { try NiftiImage.readVoxelBytes(path: "/usr/share/mricron/templates/ch2.nii.gz", offset: 352, byteCount: 7109137) { _ in } }
        var labels: [UInt16] = []
        t("map labels") { labels = img.voxels.map { UInt16($0 > 100 ? 2 : $0 > 30 ? 1 : 0) } }
        t("nonfinite") { _ = img.nonFiniteCount }
        try t("write gz") { try NiftiImage.writeLabelMap(labels, like: img, to: "/tmp/probe/t.nii.gz") }
        try t("write nii") { try NiftiImage.writeLabelMap(labels, like: img, to: "/tmp/probe/t.nii") }
        let u8 = [UInt8](repeating: 3, count: labels.count)
        try t("writeVolume nii") { try u8.withUnsafeBytes { try NiftiImage.writeVolume($0, datatype: .uint8, geometry: img.geometry, intent: 0, calibration: (0, 0), description: "", to: "/tmp/probe/u.nii", protecting: nil) } }
        try t("writeVolume gz") { try u8.withUnsafeBytes { try NiftiImage.writeVolume($0, datatype: .uint8, geometry: img.geometry, intent: 0, calibration: (0, 0), description: "", to: "/tmp/probe/u.nii.gz", protecting: nil) } }
        let i32 = labels.map { Int32($0) }
        try t("write label i32") { try NiftiImage.writeLabelMap(i32, like: img, to: "/tmp/probe/t.nii") }
        try t("read back") { _ = try NiftiImage(contentsOf: "/tmp/probe/t.nii") }
        let f = labels.map(Float.init)
        t("compare") { XCTAssertEqual(f, img.voxels.map { Float(UInt16($0 > 100 ? 2 : $0 > 30 ? 1 : 0)) }) }
    }
}
