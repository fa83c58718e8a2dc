//! mpcformer: MPC-friendly BERT (MPCFormer, Li et al., ICLR 2023) in candle — fine-tuning,
//! evaluation and, in later modules, distillation and private inference.

pub mod bench;
pub mod cli;
pub mod data;
pub mod deploy;
pub mod eval;
pub mod hub;
pub mod model;
pub mod mpc;
pub mod train;
