// Base64 decoding (RFC 4648, standard alphabet) for $MEMORY_PRESSURE_WRITE,
// which systemd passes base64-encoded. No Foundation in the library.

enum Base64 {
    /// Decodes `text`, ignoring ASCII whitespace (as systemd's unbase64mem
    /// does). Padding is optional; if present it must be correct.
    ///
    /// - Parameter name: what the text is, for the error (e.g. the variable).
    /// - Throws: `.malformedFile(path: name, …)` for a character outside the
    ///   alphabet, a misplaced `=`, or a length that cannot be base64.
    static func decode(_ text: String, name: String) throws(VRangeError) -> [UInt8] {
        func fail(_ reason: String) -> VRangeError { .malformedFile(path: name, reason: reason) }
        var sextets: [UInt8] = []
        var padding = 0
        for byte in text.utf8 {
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "="):
                padding += 1
                continue
            default: break
            }
            if padding > 0 { throw fail("data after '=' padding") }
            guard let v = value(byte) else {
                throw fail("byte 0x\(String(byte, radix: 16)) is not base64")
            }
            sextets.append(v)
        }
        let remainder = sextets.count % 4
        if remainder == 1 { throw fail("\(sextets.count) base64 digits cannot encode whole bytes") }
        if padding > 2 || (padding > 0 && (sextets.count + padding) % 4 != 0) {
            throw fail("wrong '=' padding")
        }
        var out: [UInt8] = []
        out.reserveCapacity(sextets.count * 3 / 4)
        var i = 0
        while i + 4 <= sextets.count {
            let n = UInt32(sextets[i]) << 18 | UInt32(sextets[i + 1]) << 12 | UInt32(sextets[i + 2]) << 6 | UInt32(sextets[i + 3])
            out += [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)]
            i += 4
        }
        if remainder >= 2 {
            var n = UInt32(sextets[i]) << 18 | UInt32(sextets[i + 1]) << 12
            if remainder == 3 { n |= UInt32(sextets[i + 2]) << 6 }
            out.append(UInt8(n >> 16 & 0xff))
            if remainder == 3 { out.append(UInt8(n >> 8 & 0xff)) }
            // The unused low bits must be zero (canonical encoding).
            if (remainder == 2 && n & 0xffff != 0) || (remainder == 3 && n & 0xff != 0) {
                throw fail("non-canonical final base64 digit")
            }
        }
        return out
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
