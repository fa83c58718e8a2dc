//! Padding-free ("packed") execution of BERT's token-wise layers.
//!
//! A dynamically padded batch is still mostly padding when lengths vary: on SST-2 in file order
//! (batches of 32) 68% of the [B, L] slots are padding. Everything in a BERT layer except the two
//! attention products acts on each token alone — the linear layers, LayerNorm, the activation,
//! dropout, residual adds — so those run here on the N computed tokens only, as an [N, D]
//! matrix, and only attention sees the padded [B, L] layout (it needs whole rows of keys).
//!
//! Why the result is unchanged: a padded slot influences a real token only as an attention key,
//! and every softmax kind masks padded keys (additive −1e4 or the multiplicative 0/1 mask) —
//! so a padded key's value never matters, and a padded query's output is never read. Scattering
//! zeros into the padded key/value slots therefore gives real tokens the same values as
//! computing the padding would, and the gradients of the trainable weights are the same sums
//! without their (zero) padded terms. Position 0 of every row is always computed, even when
//! masked, because the pooler reads it. 2ReLU is the exception and runs fully padded
//! (`Packing::dense`): it gives every key, padded ones included, weight ε/L — all of the weight
//! when a query's real scores are all ≤ 0 — so there the pad tokens' values do matter.
//!
//! Hidden states are returned in the padded [B, L, H] layout with zeros at padded slots
//! (distillation masks those slots out of its losses; see `train::distill::PadMasks`).

use candle_core::{DType, Device, Result, Tensor};

/// Where the computed tokens of a [B, L] batch sit, and how to move between layouts.
#[derive(Debug, Clone)]
pub struct Packing {
    b: usize,
    l: usize,
    n: usize,
    /// None when every slot is computed (no padding): packing is a reshape.
    index: Option<Index>,
}

#[derive(Debug, Clone)]
struct Index {
    /// [N] u32: flat slot b·L + t of each computed token, in row-major order.
    gather: Tensor,
    /// [B·L] u32: packed index of each slot, or N (a zero row appended by `unpack`).
    scatter: Tensor,
    /// [N] u32: position t of each computed token.
    positions: Tensor,
    /// [B] u32: packed index of each row's position 0.
    first: Tensor,
}

impl Packing {
    /// From the 0/1 attention mask [B, L] (any dtype): real tokens plus position 0 of each row.
    pub fn new(attention_mask: &Tensor) -> Result<Self> {
        let (b, l) = attention_mask.dims2()?;
        let dev = attention_mask.device();
        let mask: Vec<Vec<f32>> = attention_mask.to_dtype(DType::F32)?.to_vec2()?;
        let computed = |r: usize, t: usize| t == 0 || mask[r][t] != 0.0;
        let n = (0..b).map(|r| (0..l).filter(|&t| computed(r, t)).count()).sum::<usize>();
        if n == b * l {
            return Ok(Self::dense(b, l));
        }
        let mut gather = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut first = Vec::with_capacity(b);
        let mut scatter = vec![n as u32; b * l];
        for r in 0..b {
            for t in 0..l {
                if computed(r, t) {
                    if t == 0 {
                        first.push(gather.len() as u32);
                    }
                    scatter[r * l + t] = gather.len() as u32;
                    gather.push((r * l + t) as u32);
                    positions.push(t as u32);
                }
            }
        }
        let index = Index {
            gather: Tensor::new(gather, dev)?,
            scatter: Tensor::new(scatter, dev)?,
            positions: Tensor::new(positions, dev)?,
            first: Tensor::new(first, dev)?,
        };
        Ok(Self { b, l, n, index: Some(index) })
    }

    /// Every slot computed (no padding, e.g. a single unpadded sequence).
    pub fn dense(b: usize, l: usize) -> Self {
        Self { b, l, n: b * l, index: None }
    }

    /// B.
    pub fn batch(&self) -> usize {
        self.b
    }

    /// L, the padded length.
    pub fn padded_len(&self) -> usize {
        self.l
    }

    /// Number of computed tokens N.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// [B, L, …] → [N, …]: the computed tokens, in row-major order.
    pub fn pack(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims()[1..].to_vec();
        dims[0] = self.b * self.l;
        let flat = x.reshape(dims)?;
        match &self.index {
            None => Ok(flat),
            Some(ix) => flat.index_select(&ix.gather, 0),
        }
    }

    /// [N, D] → [B, L, D], zeros at the slots that were not computed.
    pub fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(1)?;
        match &self.index {
            None => x.reshape((self.b, self.l, d)),
            Some(ix) => {
                let zero = Tensor::zeros((1, d), x.dtype(), x.device())?;
                Tensor::cat(&[x, &zero], 0)?.index_select(&ix.scatter, 0)?.reshape((self.b, self.l, d))
            }
        }
    }

    /// [N] u32 positions of the computed tokens (for the position embeddings).
    pub fn positions(&self, dev: &Device) -> Result<Tensor> {
        match &self.index {
            None => Tensor::arange(0u32, self.l as u32, dev)?.repeat(self.b),
            Some(ix) => Ok(ix.positions.clone()),
        }
    }

    /// [N, D] → [B, D]: each row's position-0 token ([CLS]).
    pub fn first_tokens(&self, x: &Tensor) -> Result<Tensor> {
        match &self.index {
            None => x.reshape((self.b, self.l, x.dim(1)?))?.narrow(1, 0, 1)?.squeeze(1),
            Some(ix) => x.index_select(&ix.first, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_keeps_real_tokens_and_zeroes_padding() {
        let dev = Device::Cpu;
        let mask = Tensor::new(&[[1u32, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], &dev).unwrap();
        let p = Packing::new(&mask).unwrap();
        // Row 1 is all padding but its position 0 is still computed (the pooler reads it).
        assert_eq!(p.tokens(), 3 + 1 + 4);
        let x = Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((3, 4, 2)).unwrap();
        let packed = p.pack(&x).unwrap();
        let rows: Vec<Vec<f32>> = packed.to_vec2().unwrap();
        let slots: Vec<usize> = vec![0, 1, 2, 4, 8, 9, 10, 11];
        for (row, s) in rows.iter().zip(&slots) {
            assert_eq!(row, &vec![(2 * s) as f32, (2 * s + 1) as f32]);
        }
        let back: Vec<Vec<Vec<f32>>> = p.unpack(&packed).unwrap().to_vec3().unwrap();
        let orig: Vec<Vec<Vec<f32>>> = x.to_vec3().unwrap();
        for r in 0..3 {
            for t in 0..4 {
                let want = if slots.contains(&(r * 4 + t)) { orig[r][t].clone() } else { vec![0.0, 0.0] };
                assert_eq!(back[r][t], want, "slot {r},{t}");
            }
        }
        let pos: Vec<u32> = p.positions(&dev).unwrap().to_vec1().unwrap();
        assert_eq!(pos, vec![0, 1, 2, 0, 0, 1, 2, 3]);
        let first: Vec<Vec<f32>> = p.first_tokens(&packed).unwrap().to_vec2().unwrap();
        assert_eq!(first, vec![vec![0.0, 1.0], vec![8.0, 9.0], vec![16.0, 17.0]]);
    }

    #[test]
    fn a_full_mask_packs_by_reshaping() {
        let dev = Device::Cpu;
        let mask = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let p = Packing::new(&mask).unwrap();
        assert!(p.index.is_none());
        let x = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((2, 3, 2)).unwrap();
        let packed = p.pack(&x).unwrap();
        assert_eq!(packed.dims(), &[6, 2]);
        let back: Vec<Vec<Vec<f32>>> = p.unpack(&packed).unwrap().to_vec3().unwrap();
        assert_eq!(back, x.to_vec3::<f32>().unwrap());
        assert_eq!(p.positions(&dev).unwrap().to_vec1::<u32>().unwrap(), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(p.first_tokens(&packed).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0.0, 1.0], vec![6.0, 7.0]]);
    }
}
