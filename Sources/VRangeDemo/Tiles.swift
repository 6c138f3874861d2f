// The values the demo caches: map tiles rendered from a deterministic
// terrain (value noise, several octaves, hill shading, colour by height).
// Rendering is real work, so a lost tile costs real time to rebuild. Each
// tile carries its key in its first bytes, and every value served is checked
// against the digest of its first rendering.

/// Renders `side`×`side` RGBA tiles of an endless deterministic terrain.
struct TileRenderer: Sendable {
    /// Pixels per tile edge.
    let side: Int
    /// Noise octaves per pixel: the cost of one tile.
    let octaves: Int
    /// Tiles per row of the map.
    let columns: Int

    /// Bytes of one tile.
    var byteCount: Int { side * side * 4 }

    static let magic: UInt64 = 0x454C_4954_4752_5600  // "\0VRGTILE"

    /// The tile of `key`, rendered: RGBA pixels, the first 16 bytes replaced
    /// by a header (magic, key).
    func render(_ key: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, count in
            render(key, into: UnsafeMutableRawBufferPointer(buffer))
            count = byteCount
        }
    }

    func render(_ key: Int, into out: UnsafeMutableRawBufferPointer) {
        let tx = key % columns, ty = key / columns
        let scale = 1.0 / 192.0
        var previousRow = [Double](repeating: 0, count: side)
        for y in 0..<side {
            var left = 0.0
            for x in 0..<side {
                let wx = Double(tx * side + x) * scale, wy = Double(ty * side + y) * scale
                let h = height(wx, wy)
                // Hill shading from the neighbours above and to the left.
                let dx = x == 0 ? 0 : h - left, dy = y == 0 ? 0 : h - previousRow[x]
                left = h
                previousRow[x] = h
                let shade = max(0.55, min(1.25, 1 + (dx + dy) * 40))
                let (r, g, b) = colour(h)
                let o = (y * side + x) * 4
                out[o] = UInt8(max(0, min(255, r * shade)))
                out[o + 1] = UInt8(max(0, min(255, g * shade)))
                out[o + 2] = UInt8(max(0, min(255, b * shade)))
                out[o + 3] = 255
            }
        }
        out.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: UInt64(key), toByteOffset: 8, as: UInt64.self)
    }

    /// Terrain height in 0..<1 at world coordinates: `octaves` of value noise.
    @inline(__always)
    private func height(_ x: Double, _ y: Double) -> Double {
        var sum = 0.0, amplitude = 0.5, frequency = 1.0, norm = 0.0
        for o in 0..<octaves {
            sum += amplitude * noise(x * frequency, y * frequency, UInt64(o))
            norm += amplitude
            amplitude *= 0.5
            frequency *= 2.03
        }
        return sum / norm
    }

    @inline(__always)
    private func noise(_ x: Double, _ y: Double, _ octave: UInt64) -> Double {
        let fx = x.rounded(.down), fy = y.rounded(.down)
        let ix = Int64(fx), iy = Int64(fy)
        let u = smooth(x - fx), v = smooth(y - fy)
        let a = lattice(ix, iy, octave), b = lattice(ix + 1, iy, octave)
        let c = lattice(ix, iy + 1, octave), d = lattice(ix + 1, iy + 1, octave)
        return (a + (b - a) * u) + ((c + (d - c) * u) - (a + (b - a) * u)) * v
    }

    @inline(__always)
    private func smooth(_ t: Double) -> Double { t * t * (3 - 2 * t) }

    /// A value in 0..<1 for a lattice point (SplitMix64 of its coordinates).
    @inline(__always)
    private func lattice(_ x: Int64, _ y: Int64, _ octave: UInt64) -> Double {
        var z = UInt64(bitPattern: x) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(bitPattern: y) &* 0xC2B2_AE3D_27D4_EB4F ^ octave &* 0x1656_67B1_9E37_79F9
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Colour by height: deep water, shallows, sand, grass, forest, rock, snow.
    @inline(__always)
    private func colour(_ h: Double) -> (Double, Double, Double) {
        switch h {
        case ..<0.38: return (20, 50 + h * 150, 120 + h * 200)
        case ..<0.45: return (40, 120 + (h - 0.38) * 600, 190)
        case ..<0.48: return (210, 200, 140)
        case ..<0.60: return (70, 150 - (h - 0.48) * 300, 60)
        case ..<0.70: return (40, 95, 45)
        case ..<0.80: return (120, 110, 100)
        default: return (235, 235, 240)
        }
    }
}

/// A 64-bit digest of a tile's bytes (a multiply-xor chain over 8-byte
/// words, then the tail), fast enough to check every value served.
func tileDigest(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(bytes.count)
    let words = bytes.count / 8
    var i = 0
    while i < words {
        h = (h ^ bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
        h ^= h >> 29
        i += 1
    }
    for j in (words * 8)..<bytes.count { h = (h ^ UInt64(bytes[j])) &* 0x0000_0100_0000_01B3 }
    return h
}

/// Whether `bytes` is a tile of `key` by its header.
func tileHeaderMatches(_ bytes: UnsafeRawBufferPointer, key: Int) -> Bool {
    bytes.count >= 16 && bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == TileRenderer.magic
        && bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == UInt64(key)
}
