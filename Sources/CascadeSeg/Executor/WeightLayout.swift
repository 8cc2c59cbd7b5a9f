/// Host-side reordering of convolution weights into the blocked layouts the kernels read.
enum WeightLayout {
    /// Conv weights [K, C/g, kd, kh, kw] -> [ceil(K/KB)][C/g][kd][kh][kw][KB], zero-padded.
    static func blockedConv(_ w: Tensor, blockSize kb: Int) -> [Float] {
        let k = w.shape[0], cg = w.shape[1], taps = w.shape[2] * w.shape[3] * w.shape[4]
        let blocks = (k + kb - 1) / kb
        var out = [Float](repeating: 0, count: blocks * cg * taps * kb)
        for o in 0..<k {
            let (b, lane) = (o / kb, o % kb)
            for c in 0..<cg {
                for t in 0..<taps {
                    out[((b * cg + c) * taps + t) * kb + lane] = w.data[(o * cg + c) * taps + t]
                }
            }
        }
        return out
    }

    /// ConvTranspose weights [C, K, kd, kh, kw] (group 1) -> [ceil(K/KB)][C][kd][kh][kw][KB].
    static func blockedConvTranspose(_ w: Tensor, blockSize kb: Int) -> [Float] {
        let c = w.shape[0], k = w.shape[1], taps = w.shape[2] * w.shape[3] * w.shape[4]
        let blocks = (k + kb - 1) / kb
        var out = [Float](repeating: 0, count: blocks * c * taps * kb)
        for i in 0..<c {
            for o in 0..<k {
                let (b, lane) = (o / kb, o % kb)
                for t in 0..<taps {
                    out[((b * c + i) * taps + t) * kb + lane] = w.data[(i * k + o) * taps + t]
                }
            }
        }
        return out
    }

    /// Bias padded with zeros to a whole number of blocks (zeros when the conv has no bias).
    static func paddedBias(_ bias: Tensor?, channels: Int, blockSize kb: Int) -> [Float] {
        var out = [Float](repeating: 0, count: (channels + kb - 1) / kb * kb)
        if let bias { for i in 0..<channels { out[i] = bias.data[i] } }
        return out
    }
}
