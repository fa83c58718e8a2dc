//! Fixed-point encoding of reals in Z_2^64: `x ↦ round(x·2^f) mod 2^64` (two's complement), the
//! CrypTen/moose convention. The scale travels with each shared value (`Share::frac`).

/// Default fractional bits, from measurements (`eval/private/README.md`, fractional-bits
/// sweep): at 18 the distilled MRPC student agrees with plaintext on all 408 dev pairs (max
/// |Δlogit| 7.3e−4) where 16 bits lost one near-tie (max 1.7e−2); the exact teacher's error is
/// approximation-bound from 16 on (2.2e−3 → 1.2e−3 at 18, 1.3e−3 at 20). 18 keeps products
/// below 2^(62 − 36) = 2^26 in real terms, ample for BERT activations; 20 leaves 2^22.
pub const DEFAULT_FRAC_BITS: u32 = 18;

/// Encode with `frac` fractional bits (values beyond ±2^(63−frac) saturate at i64 bounds).
pub fn encode(x: f64, frac: u32) -> u64 {
    (x * (1u64 << frac) as f64).round() as i64 as u64
}

/// Decode a ring element with `frac` fractional bits.
pub fn decode(v: u64, frac: u32) -> f64 {
    v as i64 as f64 / (1u64 << frac) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_negatives() {
        for &x in &[0.0, 1.5, -1.5, 2.5, -1e4, 12345.678] {
            assert!((decode(encode(x, 16), 16) - x).abs() <= 0.5 / 65536.0);
        }
        assert_eq!(encode(-1.0, 16), (-65536i64) as u64);
    }
}
