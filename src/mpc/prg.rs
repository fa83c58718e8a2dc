//! Seeds and pseudo-random streams: 128-bit seeds from the OS RNG, expanded with AES-128 in
//! counter mode (key = seed, IV = purpose id), so two holders of a seed derive identical
//! streams and the dealer can hand out seeds instead of whole tensors of randomness.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::TryRngCore;

use super::ring::RingTensor;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// A 128-bit PRG seed. Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 16]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// A fresh seed from the operating system's RNG.
    pub fn random() -> Self {
        let mut s = [0u8; 16];
        rand::rngs::OsRng.try_fill_bytes(&mut s).expect("OS random number generator unavailable");
        Seed(s)
    }
}

/// One AES-CTR stream.
pub struct Prg {
    cipher: Aes128Ctr,
}

impl Prg {
    pub fn new(seed: Seed, purpose: u64) -> Self {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&purpose.to_le_bytes());
        Self { cipher: Aes128Ctr::new(&seed.0.into(), &iv.into()) }
    }

    /// The next `out.len()` words of the stream (little-endian u64s of the keystream).
    pub fn fill(&mut self, out: &mut [u64]) {
        out.fill(0);
        self.fill_zeroed(out);
    }

    /// `fill` for a buffer known to be zero: the keystream is XORed onto it in place (no
    /// temporary byte buffer: the dealer expands gigabytes per BERT-base inference).
    fn fill_zeroed(&mut self, out: &mut [u64]) {
        self.cipher.apply_keystream(bytemuck::cast_slice_mut(out));
        for w in out.iter_mut() {
            *w = u64::from_le(*w); // a no-op on little-endian machines
        }
    }

    pub fn ring(&mut self, shape: &[usize]) -> RingTensor {
        let mut v = vec![0u64; shape.iter().product()];
        self.fill_zeroed(&mut v);
        RingTensor::new(shape, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_purposes_differ() {
        let s = Seed::random();
        let a = Prg::new(s, 1).ring(&[64]);
        assert_eq!(a, Prg::new(s, 1).ring(&[64]));
        assert_ne!(a, Prg::new(s, 2).ring(&[64]));
        assert_ne!(Seed::random(), s);
        // Bits look balanced.
        let ones: u32 = a.data.iter().map(|x| x.count_ones()).sum();
        assert!((ones as f64 / (64.0 * 64.0) - 0.5).abs() < 0.05);
        assert_eq!(format!("{s:?}"), "Seed(..)");
    }

    /// The words are the keystream's little-endian u64s (what a byte-wise expansion gives), the
    /// stream continues across calls, and `fill` overwrites whatever the buffer held.
    #[test]
    fn words_are_the_little_endian_keystream() {
        let s = Seed([3; 16]);
        let mut bytes = vec![0u8; 8 * 40];
        Prg::new(s, 9).cipher.apply_keystream(&mut bytes);
        let want: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let mut p = Prg::new(s, 9);
        let mut got = vec![u64::MAX; 15];
        p.fill(&mut got);
        got.extend(p.ring(&[25]).data);
        assert_eq!(got, want);
    }
}
