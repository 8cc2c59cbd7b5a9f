import Foundation

extension DispatchTime {
    /// Wall seconds from this instant to now (monotonic clock).
    public var secondsElapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - uptimeNanoseconds) / 1e9 }
}
