// Preprocessing from decoded pixels to the network's input size: channel conversion, resizing
// (bilinear when enlarging, area averaging when shrinking), center crop, padding, and EXIF
// orientation. Tests/CNNTests/ImageTests.swift holds the plain reference implementations.

/// How an image is brought to the network's input size.
public enum ImageFit: String, Sendable, CaseIterable {
    /// Resize so the image covers the target, keeping its aspect ratio, then center-crop.
    case crop
    /// Resize to the target, ignoring the aspect ratio.
    case stretch
    /// Resize so the image fits inside the target, keeping its aspect ratio, then pad with black.
    case pad
}

extension Image {
    /// Gray -> RGB repeats the value; RGB -> gray is the ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B).
    public func converted(toChannels target: Int) -> Image {
        if target == channels { return self }
        var out = Image(width: width, height: height, channels: target)
        let n = width * height
        if channels == 1 {
            for p in 0..<n { for c in 0..<target { out.pixels[p * target + c] = pixels[p] } }
        } else if target == 1 {
            for p in 0..<n {
                let r = Int(pixels[p * channels]), g = Int(pixels[p * channels + 1]), b = Int(pixels[p * channels + 2])
                out.pixels[p] = UInt8((299 * r + 587 * g + 114 * b + 500) / 1000)
            }
        } else {
            for p in 0..<n { for c in 0..<target { out.pixels[p * target + c] = pixels[p * channels + min(c, channels - 1)] } }
        }
        return out
    }

    /// Resizes to `newWidth` × `newHeight`, each axis on its own: area averaging where it shrinks,
    /// bilinear interpolation (half-pixel centers, edges clamped) where it grows.
    public func resized(width newWidth: Int, height newHeight: Int) -> Image {
        if newWidth == width && newHeight == height { return self }
        return resizedWindow(width: newWidth, height: newHeight, x0: 0, y0: 0, w: newWidth, h: newHeight)
    }

    /// The `w` × `h` window at (`x0`, `y0`) of the image resized to `newWidth` × `newHeight`, without
    /// computing the rest: the same values as cropping the whole resize, at the cost of the window
    /// (a 1×60000 image covering a 38×10 input was resized to 38×2,275,250 pixels, 260 MB, first).
    func resizedWindow(width newWidth: Int, height newHeight: Int, x0: Int, y0: Int, w: Int, h: Int) -> Image {
        let cx = ResampleAxis(source: width, target: newWidth, outputs: x0..<(x0 + w))
        let cy = ResampleAxis(source: height, target: newHeight, outputs: y0..<(y0 + h))
        let c = channels
        // Horizontal pass into floats (height × w × c), then vertical into bytes.
        var rows = [Float](repeating: 0, count: height * w * c)
        for y in 0..<height {
            for x in 0..<w {
                let taps = cx.taps[x]
                for ch in 0..<c {
                    var s: Float = 0
                    for (i, t) in taps { s += t * Float(pixels[(y * width + i) * c + ch]) }
                    rows[(y * w + x) * c + ch] = s
                }
            }
        }
        var out = Image(width: w, height: h, channels: c)
        for y in 0..<h {
            let taps = cy.taps[y]
            for x in 0..<w {
                for ch in 0..<c {
                    var s: Float = 0
                    for (i, t) in taps { s += t * rows[(i * w + x) * c + ch] }
                    out.pixels[(y * w + x) * c + ch] = UInt8(max(0, min(255, (s + 0.5).rounded(.down))))
                }
            }
        }
        return out
    }

    /// The `w` × `h` window centered in the image (the image must be at least that large).
    public func centerCropped(width w: Int, height h: Int) -> Image {
        let x0 = max(0, (width - w) / 2), y0 = max(0, (height - h) / 2)
        var out = Image(width: min(w, width), height: min(h, height), channels: channels)
        for y in 0..<out.height {
            for x in 0..<out.width {
                for c in 0..<channels { out[x, y, c] = self[x0 + x, y0 + y, c] }
            }
        }
        return out
    }

    /// The image centered on a `w` × `h` canvas of `value`.
    public func padded(width w: Int, height h: Int, value: UInt8 = 0) -> Image {
        var out = Image(width: max(w, width), height: max(h, height), channels: channels, fill: value)
        let x0 = (out.width - width) / 2, y0 = (out.height - height) / 2
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels { out[x0 + x, y0 + y, c] = self[x, y, c] }
            }
        }
        return out
    }

    /// Brings the image to `channels` × `height` × `width` by `fit`.
    public func fitted(channels target: Int, width w: Int, height h: Int, fit: ImageFit) -> Image {
        let image = converted(toChannels: target)
        switch fit {
        case .stretch:
            return image.resized(width: w, height: h)
        case .crop:
            // Scale so both sides cover the target: the larger of the two ratios.
            let useWidth = image.width * h <= image.height * w  // width/w <= height/h: width decides
            let rw = useWidth ? w : max(w, (image.width * h + image.height / 2) / image.height)
            let rh = useWidth ? max(h, (image.height * w + image.width / 2) / image.width) : h
            // Only the centered window is computed (centerCropped's window of the whole resize).
            let cw = min(w, rw), ch = min(h, rh)
            return image.resizedWindow(width: rw, height: rh, x0: max(0, (rw - w) / 2), y0: max(0, (rh - h) / 2), w: cw, h: ch)
        case .pad:
            let useWidth = image.width * h >= image.height * w
            let rw = useWidth ? w : max(1, min(w, (image.width * h + image.height / 2) / image.height))
            let rh = useWidth ? max(1, min(h, (image.height * w + image.width / 2) / image.width)) : h
            return image.resized(width: rw, height: rh).padded(width: w, height: h)
        }
    }

    /// Applies an EXIF orientation (1-8) so that the image appears upright.
    public func oriented(_ orientation: Int) -> Image {
        guard (2...8).contains(orientation) else { return self }
        let swap = orientation >= 5
        var out = Image(width: swap ? height : width, height: swap ? width : height, channels: channels)
        let w = width, h = height
        for y in 0..<out.height {
            for x in 0..<out.width {
                let (sx, sy): (Int, Int)
                switch orientation {
                case 2: (sx, sy) = (w - 1 - x, y)            // mirrored
                case 3: (sx, sy) = (w - 1 - x, h - 1 - y)    // rotated 180°
                case 4: (sx, sy) = (x, h - 1 - y)            // mirrored vertically
                case 5: (sx, sy) = (y, x)                    // transposed
                case 6: (sx, sy) = (y, h - 1 - x)            // rotate 90° clockwise to view
                case 7: (sx, sy) = (w - 1 - y, h - 1 - x)    // transverse
                default: (sx, sy) = (w - 1 - y, x)           // 8: rotate 90° counter-clockwise
                }
                for c in 0..<channels { out[x, y, c] = self[sx, sy, c] }
            }
        }
        return out
    }
}

/// For each output index along one axis, the source indices and weights that make it.
struct ResampleAxis {
    var taps: [[(Int, Float)]]

    /// The taps of outputs `outputs` (all `target` of them by default), in order.
    init(source: Int, target: Int, outputs: Range<Int>? = nil) {
        let scale = Double(source) / Double(target)
        taps = (outputs ?? 0..<target).map { o in
            if target < source {
                // Area: the output covers [o·scale, (o+1)·scale) of the source.
                let start = Double(o) * scale, end = Double(o + 1) * scale
                var list: [(Int, Float)] = []
                var i = Int(start)
                while Double(i) < end && i < source {
                    let overlap = min(end, Double(i + 1)) - max(start, Double(i))
                    if overlap > 1e-12 { list.append((i, Float(overlap / scale))) }
                    i += 1
                }
                return list
            }
            // Bilinear with half-pixel centers.
            let x = max(0, min(Double(source - 1), (Double(o) + 0.5) * scale - 0.5))
            let i0 = Int(x), i1 = min(i0 + 1, source - 1)
            let f = Float(x - Double(i0))
            return f == 0 || i1 == i0 ? [(i0, Float(1))] : [(i0, 1 - f), (i1, f)]
        }
    }
}
