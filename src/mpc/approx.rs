//! Private counterparts of `model/approx.rs` (MPCFormer's MPC-friendly functions).

use super::channel::ChannelError;
use super::party::{Party, Share};
use super::protocol::{square_raw, truncate};

/// Quad(x) = 0.125x² + 0.25x + 0.5 in two rounds (one square, one truncation):
/// 8·Quad(x) = x² + 2x + 4 is formed exactly at scale 2f (x scaled up by 2^f, the constant by
/// 2^2f), then a single truncation by f + 3 bits divides by 8 and returns to scale f.
pub fn quad(p: &mut Party, x: &Share) -> Result<Share, ChannelError> {
    let f = x.frac;
    let sq = square_raw(p, x)?;
    let lin = x.ring.scale(2u64.wrapping_shl(f));
    let four = p.public_term(4u64 << (2 * f));
    let z = Share { ring: sq.ring.add(&lin).add_scalar(four), frac: 2 * f + 3 };
    truncate(p, &z, f + 3)
}
