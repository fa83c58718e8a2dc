//! Training: optimisers and schedules, task fine-tuning (`kd finetune`) and two-stage
//! distillation into MPC-friendly students (`kd train`).

pub mod distill;
pub mod ema;
pub mod finetune;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod student;
pub mod teacher_cache;
