/// An 8-bit image: `height` rows of `width` pixels of `channels` interleaved values (HWC).
public struct Image: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    public init(width: Int, height: Int, channels: Int, fill: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels,
                  pixels: [UInt8](repeating: fill, count: width * height * channels))
    }

    public subscript(x: Int, y: Int, c: Int) -> UInt8 {
        get { pixels[(y * width + x) * channels + c] }
        set { pixels[(y * width + x) * channels + c] = newValue }
    }

    /// The pixels as (C, H, W) planes, the layout of the network's input.
    public var planes: [UInt8] {
        var out = [UInt8](repeating: 0, count: pixels.count)
        let hw = width * height
        for p in 0..<hw { for c in 0..<channels { out[c * hw + p] = pixels[p * channels + c] } }
        return out
    }
}
