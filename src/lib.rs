//! mpcformer: MPC-friendly BERT (MPCFormer, Li et al., ICLR 2023) in candle — fine-tuning,
//! evaluation and, in later modules, distillation and private inference.

pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod hub;
pub mod model;
pub mod mpc;
pub mod train;

/// glibc malloc settings for many short-lived large tensors: keep big blocks out of mmap and
/// do not trim the heap after each step (page faults dominated small-model steps otherwise).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes allocator tuning parameters; called once at start-up.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
