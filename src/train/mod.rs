//! Training: optimisers and schedules, and task fine-tuning (`kd finetune`).

pub mod finetune;
pub mod optim;
