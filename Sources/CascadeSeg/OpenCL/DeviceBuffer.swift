import COpenCL

/// A block of device memory. Its bytes count against the owning context's live total from
/// creation until the object is released, which is how the engine measures peak device memory.
public final class DeviceBuffer {
    nonisolated(unsafe) let mem: cl_mem
    public let byteCount: Int
    private let accounting: MemoryAccounting
    private let countsTowardsLive: Bool

    init(mem: cl_mem, byteCount: Int, accounting: MemoryAccounting, countsTowardsLive: Bool = true) {
        self.mem = mem
        self.byteCount = byteCount
        self.accounting = accounting
        self.countsTowardsLive = countsTowardsLive
        if countsTowardsLive { accounting.allocated(byteCount) }
        LiveObjects.shared.adjust(+1)
    }

    deinit {
        clReleaseMemObject(mem)
        if countsTowardsLive { accounting.released(byteCount) }
        LiveObjects.shared.adjust(-1)
    }

    public var floatCount: Int { byteCount / 4 }
}

/// Exact count of device bytes held, and the high-water mark since the last reset.
public final class MemoryAccounting: @unchecked Sendable {
    private let lock = Lock()
    private var live = 0
    private var peak = 0

    private var windows: [ObjectIdentifier: PeakWindow] = [:]

    public init() {}

    func allocated(_ bytes: Int) {
        lock.locked {
            live += bytes
            peak = max(peak, live)
            for w in windows.values { w.peak = max(w.peak, live) }
        }
    }
    func released(_ bytes: Int) { lock.locked { live -= bytes } }

    public var liveBytes: Int { lock.locked { live } }
    public var peakBytes: Int { lock.locked { peak } }
    /// Starts a new measurement window: the peak becomes the current live total.
    public func resetPeak() { lock.locked { peak = live } }

    /// A high-water mark of its own, from now until `close`: what one run reports, unaffected by
    /// another run resetting the shared peak (it still counts the other run's buffers: they
    /// occupy the device too).
    public final class PeakWindow: @unchecked Sendable {
        fileprivate(set) public var peak: Int
        fileprivate init(peak: Int) { self.peak = peak }
    }

    public func openWindow() -> PeakWindow {
        lock.locked {
            let w = PeakWindow(peak: live)
            windows[ObjectIdentifier(w)] = w
            return w
        }
    }

    /// Stops updating `window` and returns its peak.
    @discardableResult
    public func close(_ window: PeakWindow) -> Int {
        lock.locked {
            windows[ObjectIdentifier(window)] = nil
            return window.peak
        }
    }
}

/// Counts OpenCL objects the engine holds (buffers, contexts, queues), so tests can prove that
/// nothing leaks.
public final class LiveObjects: @unchecked Sendable {
    public static let shared = LiveObjects()
    private let lock = Lock()
    private var count = 0
    func adjust(_ delta: Int) { lock.locked { count += delta } }
    public var buffers: Int { lock.locked { count } }
}
