//! Evaluation/training data: task descriptions and split loaders.
//!
//! Two on-disk families are supported (formats documented in `data/README.md`):
//! - GLUE tasks, as laid out by the standard GLUE download script
//!   (`glue_data/<TASK>/{train,dev,test}.tsv`), read by [`glue`];
//! - IMDb, the Large Movie Review Dataset v1.0 (Maas et al., ACL 2011), either as
//!   `{train,test}.csv(.gz)` or the original `aclImdb/{train,test}/{pos,neg}` tree, read by [`imdb`].
//!
//! [`load_split`] is the single entry point the rest of the crate uses.

pub mod augment;
pub mod batch;
pub mod glue;
pub mod imdb;

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A supported classification/regression task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Cola,
    Sst2,
    Mrpc,
    Stsb,
    Qqp,
    Mnli,
    Qnli,
    Rte,
    Wnli,
    Imdb,
}

impl Task {
    pub const ALL: [Task; 10] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Stsb,
        Task::Qqp,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
        Task::Imdb,
    ];

    /// Canonical lowercase name (also the serde name).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Cola => "cola",
            Task::Sst2 => "sst2",
            Task::Mrpc => "mrpc",
            Task::Stsb => "stsb",
            Task::Qqp => "qqp",
            Task::Mnli => "mnli",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Wnli => "wnli",
            Task::Imdb => "imdb",
        }
    }

    /// Width of the classifier head (1 for the STS-B regression head).
    pub fn num_labels(&self) -> usize {
        match self {
            Task::Stsb => 1,
            Task::Mnli => 3,
            _ => 2,
        }
    }

    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Stsb)
    }

    /// Label strings in class-id order (the `id2label` of a checkpoint). The order follows
    /// the GLUE processors of HF transformers so class ids agree with published checkpoints.
    pub fn label_names(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Task::Mnli => &["contradiction", "entailment", "neutral"],
            Task::Qnli | Task::Rte => &["entailment", "not_entailment"],
            Task::Imdb => &["neg", "pos"],
            Task::Stsb => &["score"],
            Task::Cola | Task::Sst2 | Task::Mrpc | Task::Qqp | Task::Wnli => &["0", "1"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Key of the metric used for model selection (see `eval::metrics::Metrics::primary`).
    pub fn primary_metric(&self) -> &'static str {
        match self {
            Task::Cola => "mcc",
            Task::Mrpc | Task::Qqp => "f1",
            Task::Stsb => "corr",
            _ => "accuracy",
        }
    }

    /// Directory name of the task in the GLUE download layout (`imdb` for IMDb).
    pub fn default_dir_name(&self) -> &'static str {
        match self {
            Task::Cola => "CoLA",
            Task::Sst2 => "SST-2",
            Task::Mrpc => "MRPC",
            Task::Stsb => "STS-B",
            Task::Qqp => "QQP",
            Task::Mnli => "MNLI",
            Task::Qnli => "QNLI",
            Task::Rte => "RTE",
            Task::Wnli => "WNLI",
            Task::Imdb => "imdb",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = DataError;

    /// Case-insensitive; `-` and `_` are ignored so "SST-2", "sst_2", "STS-B" all parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Task::ALL
            .iter()
            .copied()
            .find(|t| t.name() == norm)
            .ok_or_else(|| DataError::UnknownTask(s.to_string()))
    }
}

/// Gold label of an example: a class id (index into [`Task::label_names`]) or a regression score.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    Class(usize),
    Score(f32),
}

/// One input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 0-based data row within the split file (header excluded); for the aclImdb directory
    /// layout, the position in the listing order (neg by numeric id, then pos by numeric id).
    pub index: usize,
    pub text_a: String,
    pub text_b: Option<String>,
    /// `None` for unlabeled (test) splits.
    pub label: Option<Label>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line` is the 1-based physical line in the file.
    #[error("{path}:{line}: {msg}")]
    Malformed {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("unknown task '{0}' (expected one of: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, imdb)")]
    UnknownTask(String),
    #[error("{task}: no split '{split}' in {dir} (looked for {tried})")]
    MissingSplit {
        task: String,
        split: String,
        dir: PathBuf,
        tried: String,
    },
    /// A problem tied to a file or directory as a whole rather than to one line
    /// (e.g. an aclImdb review file whose name is not `<id>_<rating>.txt`).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// Load a split of a task from the task's own directory
/// (e.g. `../shared/data/glue/SST-2` or `../shared/data/imdb`).
///
/// `split` is `"train"`, `"dev"` or `"test"`. For MNLI, `"dev"` means `dev_matched` and
/// `"test"` means `test_matched`; `"dev_matched"`, `"dev_mismatched"`, `"test_matched"` and
/// `"test_mismatched"` are accepted too. IMDb has no dev split: `"dev"` is an alias of
/// `"test"` (the labeled 25k test reviews). GLUE test splits are unlabeled and yield
/// `label: None`; IMDb test is labeled.
///
/// `limit` keeps only the first N rows in file order; reading stops there, which matters
/// for the 25k-review IMDb files.
pub fn load_split(
    task: Task,
    dir: &Path,
    split: &str,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    match task {
        Task::Imdb => imdb::load(dir, split, limit),
        _ => glue::load(task, dir, split, limit),
    }
}

/// A seeded uniform random subset of `n` rows, kept in file order (rows keep their `index`).
/// For files sorted by label (IMDb's are: 12,500 negatives, then positives) a first-N
/// `limit` is not a sample; this is. All rows are kept when `n` ≥ the number of rows.
pub fn subsample(examples: Vec<Example>, n: usize, seed: u64) -> Vec<Example> {
    use rand::SeedableRng;
    if n >= examples.len() {
        return examples;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut keep = rand::seq::index::sample(&mut rng, examples.len(), n).into_vec();
    keep.sort_unstable();
    let mut it = keep.into_iter().peekable();
    examples
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            if it.peek() == Some(&i) {
                it.next();
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

/// Root of the real data for tests: `$KD_ASSETS/data`, with KD_ASSETS defaulting to
/// `../shared` next to the crate. Panics (fails the test) when it is missing, because
/// silently skipping would hide a broken setup.
#[cfg(test)]
pub(crate) fn test_assets_data_dir() -> PathBuf {
    let assets = match std::env::var_os("KD_ASSETS") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let data = assets.join("data");
    assert!(
        data.is_dir(),
        "real-data test: {} does not exist; set KD_ASSETS to the assets root holding data/glue and data/imdb",
        data.display()
    );
    data
}

#[cfg(test)]
pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_roundtrip() {
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>().unwrap(), t);
            assert_eq!(t.default_dir_name().parse::<Task>().unwrap(), t);
            assert_eq!(t.to_string(), t.name());
            // serde name equals name()
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.name())
            );
            assert_eq!(t.label_names().len(), t.num_labels());
        }
    }

    #[test]
    fn task_parse_variants() {
        assert_eq!("SST-2".parse::<Task>().unwrap(), Task::Sst2);
        assert_eq!("sst-2".parse::<Task>().unwrap(), Task::Sst2);
        assert_eq!("sts-b".parse::<Task>().unwrap(), Task::Stsb);
        assert_eq!("STS_B".parse::<Task>().unwrap(), Task::Stsb);
        assert_eq!("MNLI".parse::<Task>().unwrap(), Task::Mnli);
        assert_eq!("IMDb".parse::<Task>().unwrap(), Task::Imdb);
        let err = "glue".parse::<Task>().unwrap_err().to_string();
        assert!(
            err.contains("'glue'") && err.contains("cola") && err.contains("imdb"),
            "{err}"
        );
    }

    #[test]
    fn task_properties() {
        assert_eq!(Task::Stsb.num_labels(), 1);
        assert!(Task::Stsb.is_regression());
        assert!(!Task::Mnli.is_regression());
        assert_eq!(Task::Mnli.num_labels(), 3);
        assert_eq!(
            Task::Mnli.label_names(),
            vec!["contradiction", "entailment", "neutral"]
        );
        assert_eq!(
            Task::Rte.label_names(),
            vec!["entailment", "not_entailment"]
        );
        assert_eq!(Task::Imdb.label_names(), vec!["neg", "pos"]);
        assert_eq!(Task::Cola.primary_metric(), "mcc");
        assert_eq!(Task::Mrpc.primary_metric(), "f1");
        assert_eq!(Task::Qqp.primary_metric(), "f1");
        assert_eq!(Task::Stsb.primary_metric(), "corr");
        assert_eq!(Task::Sst2.primary_metric(), "accuracy");
        assert_eq!(Task::Imdb.primary_metric(), "accuracy");
    }

    #[test]
    fn subsample_is_seeded_ordered_and_balanced_on_sorted_files() {
        let rows: Vec<Example> = (0..1000)
            .map(|i| Example { index: i, text_a: format!("r{i}"), text_b: None, label: Some(Label::Class(usize::from(i >= 500))) })
            .collect();
        let a = subsample(rows.clone(), 100, 7);
        let b = subsample(rows.clone(), 100, 7);
        let c = subsample(rows.clone(), 100, 8);
        assert_eq!(a.len(), 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0].index < w[1].index));
        let pos = a.iter().filter(|e| e.label == Some(Label::Class(1))).count();
        assert!((30..=70).contains(&pos), "{pos} positives of 100");
        assert_eq!(subsample(rows.clone(), 5000, 1).len(), 1000);
    }
}
