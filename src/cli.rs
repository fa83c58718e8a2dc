//! Command-line interface of `kd` (clap derive): raw arguments only; `main.rs` runs them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kd", version, about = "MPC-friendly BERT: fine-tune, distill, evaluate, and run under 2-party MPC")]
pub struct Cli {
    /// Worker threads for tensor ops (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune a pretrained BERT (local dir or hub id) into a task teacher.
    Finetune(FinetuneCmd),
    /// Two-stage knowledge distillation into an MPC-friendly student, from a recipe.
    Train(TrainCmd),
    /// Task metrics of a model in plaintext.
    Eval(EvalCmd),
    /// Word-substitution variants of a task's training rows, a larger transfer set for
    /// distillation (`transfer_file` in a recipe); the teacher labels them.
    Augment(AugmentCmd),
    /// Task metrics under 2-party MPC (in-process parties, dealer and client), with agreement
    /// against the plaintext model, communication and estimated LAN/WAN time.
    PrivateEval(PrivateEvalCmd),
    /// Throughput benchmarks.
    Bench(BenchCmd),
    /// Make a test CA and one certificate per role (p0, p1, dealer, client) for `kd party`/`kd query`.
    Certs(CertsCmd),
    /// Split a model into share bundles: one per computing party plus a public one for clients.
    Share(ShareCmd),
    /// Run one role of a deployment (P0, P1 or the dealer) until killed.
    Party(PartyCmd),
    /// Private inference against a running deployment: one text, or a task's rows.
    Query(QueryCmd),
}

#[derive(Debug, Args)]
pub struct CertsCmd {
    /// Output directory (ca.pem, ca.key, <role>.pem, <role>.key).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "preset"]))]
pub struct ShareCmd {
    /// Model directory (HF format with a task head) to share.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Or a random-weight model of a named shape: tiny, mini, small, base (as `kd bench private`).
    #[arg(long)]
    pub preset: Option<String>,
    /// Seed of the random preset weights.
    #[arg(long, default_value_t = 5)]
    pub seed: u64,
    /// Labels of the random preset's head.
    #[arg(long, default_value_t = 2)]
    pub labels: usize,
    /// Vocabulary of the random preset.
    #[arg(long, default_value_t = 30522)]
    pub vocab: usize,
    /// FFN activation of the random preset: gelu, gelu_new, relu or quad.
    #[arg(long, default_value = "quad")]
    pub act: String,
    /// Attention normalisation of the random preset: softmax, 2quad or 2relu.
    #[arg(long, default_value = "2quad")]
    pub softmax: String,
    /// Tokenizer files for the public bundle (default: the --model directory).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Fixed-point fractional bits (8..=20).
    #[arg(long, default_value_t = crate::mpc::fixed::DEFAULT_FRAC_BITS)]
    pub frac_bits: u32,
    /// Output directory: public/, p0/, p1/ (replaced if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Check the model's attention scores against the private attention's bound on this task's
    /// data before sharing (with --check-data; refuses when a score reaches 2^11).
    #[arg(long, requires = "check_data")]
    pub check_task: Option<String>,
    /// Task directory for --check-task (its dev split is used).
    #[arg(long, requires = "check_task")]
    pub check_data: Option<PathBuf>,
    /// Rows of the dev split to check (default: all).
    #[arg(long)]
    pub check_limit: Option<usize>,
    /// Sequence length of the check.
    #[arg(long, default_value_t = 128)]
    pub check_max_seq_len: usize,
}

#[derive(Debug, Args)]
pub struct PartyCmd {
    /// p0, p1 or dealer.
    #[arg(long)]
    pub role: String,
    /// This role's TOML config (addresses, TLS files, bundle, timeouts).
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["text", "task"]))]
pub struct QueryCmd {
    /// The client's TOML config (P0/P1 addresses, TLS files, the public bundle).
    #[arg(long)]
    pub config: PathBuf,
    /// One input text.
    #[arg(long)]
    pub text: Option<String>,
    /// Second segment of a sentence-pair input.
    #[arg(long, requires = "text")]
    pub text_pair: Option<String>,
    /// Or a task's rows (cola, sst2, mrpc, …) from --data.
    #[arg(long, requires = "data")]
    pub task: Option<String>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Keep the first N rows of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Ask the same input this many times (timing).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Write the results (logits, predictions, per-query times and counts) as JSON.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FinetuneCmd {
    /// Pretrained model: HF directory or hub id.
    #[arg(long)]
    pub model: String,
    /// cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, imdb
    #[arg(long)]
    pub task: String,
    /// The task's data directory, e.g. ../shared/data/glue/SST-2.
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory (the best checkpoint; rerun the same command to resume).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluate on dev and checkpoint every N steps (0 = end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 64)]
    pub eval_batch_size: usize,
    /// Use only the first N training rows.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use only the first N dev rows.
    #[arg(long)]
    pub limit_dev: Option<usize>,
    /// Train on a seeded random subset of N rows (for label-sorted files such as IMDb's).
    #[arg(long)]
    pub sample_train: Option<usize>,
    /// Evaluate on a seeded random subset of N dev rows.
    #[arg(long)]
    pub sample_dev: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    /// Checkpoint and stop after this many steps in total; rerun the same command to continue.
    #[arg(long)]
    pub stop_after_steps: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TrainCmd {
    /// Recipe (TOML), e.g. recipes/mrpc-quad-2quad.toml.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Override the recipe's teacher directory.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Override the recipe's data directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override the recipe's output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override any recipe field: --set stage1.epochs=2 --set student.softmax_act=2relu (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Checkpoint and stop after this many optimizer steps (both stages); rerun to continue.
    #[arg(long)]
    pub stop_after_steps: Option<u64>,
    /// Memory (GiB) for caching the teacher's stage-1 targets across epochs; 0 runs the teacher
    /// every step. A training set that needs more runs the teacher every step.
    #[arg(long, default_value_t = 6.0)]
    pub teacher_cache_gib: f64,
}

#[derive(Debug, Args)]
pub struct AugmentCmd {
    #[arg(long)]
    pub task: String,
    /// The task's data directory (GLUE layout).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Model whose input-embedding table gives the word neighbours (the teacher).
    #[arg(long)]
    pub model: PathBuf,
    /// Output file, in the split's own format (each source row followed by its variants).
    #[arg(long)]
    pub out: PathBuf,
    /// Distinct variants per source row.
    #[arg(long, default_value_t = 8)]
    pub per_example: usize,
    /// Probability that each replaceable word is replaced.
    #[arg(long, default_value_t = 0.4)]
    pub replace_prob: f64,
    /// Nearest neighbours a replacement is drawn from.
    #[arg(long, default_value_t = 15)]
    pub neighbours: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct EvalCmd {
    /// Model directory (HF format) or hub id.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub task: String,
    /// The task's data directory.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Keep the first N rows of the split, in file order.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate a seeded random subset of N rows (after --limit), kept in file order; for
    /// label-sorted files such as IMDb's, where the first N rows are one class.
    #[arg(long)]
    pub sample: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Write per-row predictions (CSV).
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Write the metrics JSON.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Results table to append a row to.
    #[arg(long, default_value = "eval/results.csv")]
    pub results: PathBuf,
    /// Do not append to the results table.
    #[arg(long)]
    pub no_results: bool,
}

#[derive(Debug, Args)]
pub struct PrivateEvalCmd {
    /// Everything `kd eval` takes (the plaintext reference pass uses --batch-size; private
    /// inference runs one row at a time).
    #[command(flatten)]
    pub eval: EvalCmd,
    /// Fixed-point fractional bits (8..=20).
    #[arg(long, default_value_t = crate::mpc::fixed::DEFAULT_FRAC_BITS)]
    pub frac_bits: u32,
}

#[derive(Debug, Args)]
pub struct PlaceholderCmd {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Fine-tuning step and evaluation throughput on SST-2 batches (file order, dynamic padding).
    Train(BenchTrainCmd),
    /// Distillation step throughput (stage 1 and stage 2) on MRPC batches (file order).
    Distill(BenchDistillCmd),
    /// Wrapping-u64 GEMM throughput at BERT shapes (the MPC executor's compute floor).
    Gemm(BenchGemmCmd),
    /// A random-weight encoder under 2-party MPC (in-process): time, rounds, bytes per class.
    Private(BenchPrivateCmd),
}

#[derive(Debug, Args)]
pub struct BenchDistillCmd {
    /// Teacher backbone (a seeded 2-class head is added).
    #[arg(long)]
    pub model: PathBuf,
    /// The MRPC data directory.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Write the result JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchPrivateCmd {
    /// Named shapes, comma-separated: tiny (2L/128), mini (4L/256), small (4L/512), base (12L/768).
    /// Without it, one model of --layers/--hidden/--heads.
    #[arg(long, value_delimiter = ',')]
    pub preset: Vec<String>,
    /// Or a model directory (a trained checkpoint; its own shape and variant) at each --seq-len.
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Sequence lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub seq_len: Vec<usize>,
    #[arg(long, default_value_t = 30522)]
    pub vocab: usize,
    /// Variants ACT+SOFTMAX, comma-separated (e.g. gelu+softmax,quad+2quad); default --act/--softmax.
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// FFN activation: gelu, gelu_new, relu or quad.
    #[arg(long, default_value = "quad")]
    pub act: String,
    /// Attention normalisation: softmax, 2quad or 2relu.
    #[arg(long, default_value = "2quad")]
    pub softmax: String,
    /// Fixed-point fractional bits (8..=20).
    #[arg(long, default_value_t = crate::mpc::fixed::DEFAULT_FRAC_BITS)]
    pub frac_bits: u32,
    /// Write the results JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the markdown table (next to --out, same stem, .md).
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Debug, Args)]
pub struct BenchGemmCmd {
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Write the results JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchTrainCmd {
    #[arg(long)]
    pub model: String,
    /// SST-2 data directory.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub eval_repeats: usize,
    /// Write the results JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}
