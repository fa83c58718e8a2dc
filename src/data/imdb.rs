//! Reader for IMDb, the Large Movie Review Dataset v1.0 (Maas et al., "Learning Word Vectors
//! for Sentiment Analysis", ACL 2011, <https://ai.stanford.edu/~amaas/data/sentiment/>).
//!
//! Accepted layouts inside the dataset directory, tried in this order for a split:
//! 1. `{split}.csv` — RFC 4180 CSV with a header naming `text` and `label` columns
//!    (label `0` = negative, `1` = positive), as in `shared/data/imdb` (see its SOURCES.md);
//! 2. `{split}.csv.gz` — the same, gzip-compressed (read as a stream, multi-member safe);
//! 3. `aclImdb/{split}/{neg,pos}/<id>_<rating>.txt` or `{split}/{neg,pos}/<id>_<rating>.txt` —
//!    the original extracted archive. Reviews are ordered neg by numeric id, then pos by
//!    numeric id, which is the row order of the CSV files (and of the HF `imdb` dataset).
//!    `unsup/` is ignored.
//!
//! IMDb has no dev split; `dev` is an alias of `test` (labeled, 25,000 reviews).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{DataError, Example, Label};

/// Load `split` (`train`, `test`, or `dev` = `test`) from an IMDb directory.
pub fn load(dir: &Path, split: &str, limit: Option<usize>) -> Result<Vec<Example>, DataError> {
    let s = if split == "dev" { "test" } else { split };
    let csv = dir.join(format!("{s}.csv"));
    if csv.is_file() {
        return read_csv(&csv, limit);
    }
    let gz = dir.join(format!("{s}.csv.gz"));
    if gz.is_file() {
        return read_csv(&gz, limit);
    }
    for tree in [dir.join("aclImdb").join(s), dir.join(s)] {
        if tree.join("neg").is_dir() && tree.join("pos").is_dir() {
            return read_review_tree(&tree, limit);
        }
    }
    Err(DataError::MissingSplit {
        task: "imdb".to_string(),
        split: split.to_string(),
        dir: dir.to_path_buf(),
        tried: format!("{s}.csv, {s}.csv.gz, aclImdb/{s}/{{neg,pos}}/, {s}/{{neg,pos}}/"),
    })
}

/// Read a `text,label` CSV file; a `.gz` name means gzip. Stops after `limit` records.
pub fn read_csv(path: &Path, limit: Option<usize>) -> Result<Vec<Example>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let gzipped = path.extension().is_some_and(|e| e == "gz");
    let input: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    // Flexible so a short/long row is reported by us with its line, not as a generic csv error.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);

    let header = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').trim() == name)
    };
    let (Some(text_idx), Some(label_idx)) = (find("text"), find("label")) else {
        return Err(DataError::malformed(
            path,
            1,
            format!(
                "header must name 'text' and 'label' columns, found {:?}",
                header.iter().collect::<Vec<_>>()
            ),
        ));
    };
    let width = header.len();

    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        if !rdr.read_record(&mut rec).map_err(|e| csv_err(path, e))? {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line() as usize);
        if rec.len() != width {
            return Err(DataError::malformed(
                path,
                line,
                format!("expected {width} fields, found {}", rec.len()),
            ));
        }
        // Both indices are < width == rec.len(), checked above.
        let text = &rec[text_idx];
        let label = match rec[label_idx].trim() {
            "0" => 0,
            "1" => 1,
            other => {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("label '{other}' is not 0 or 1"),
                ))
            }
        };
        out.push(Example {
            index: out.len(),
            text_a: text.to_string(),
            text_b: None,
            label: Some(Label::Class(label)),
        });
    }
    Ok(out)
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => DataError::io(path, io),
        csv::ErrorKind::Utf8 { err, .. } => {
            DataError::malformed(path, line, format!("invalid UTF-8: {err}"))
        }
        other => DataError::malformed(path, line, format!("{other:?}")),
    }
}

/// Read `<tree>/{neg,pos}/<id>_<rating>.txt`: neg (label 0) by numeric id, then pos (label 1).
/// Only the first `limit` files of that order are opened.
pub fn read_review_tree(tree: &Path, limit: Option<usize>) -> Result<Vec<Example>, DataError> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for (label, sub) in [(0usize, "neg"), (1, "pos")] {
        let d = tree.join(sub);
        let mut part = list_reviews(&d)?;
        // Numeric id order; the name breaks ties only to make the order deterministic.
        part.sort();
        files.extend(part.into_iter().map(|(_, _, p)| (label, p)));
    }
    let n = limit.unwrap_or(usize::MAX).min(files.len());
    files
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(index, (label, p))| {
            let text = std::fs::read_to_string(&p).map_err(|e| DataError::io(&p, e))?;
            Ok(Example {
                index,
                text_a: text,
                text_b: None,
                label: Some(Label::Class(label)),
            })
        })
        .collect()
}

/// `(id, file name, path)` of every `.txt` review in `dir`; other files are ignored.
fn list_reviews(dir: &Path) -> Result<Vec<(u64, String, PathBuf)>, DataError> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".txt") else {
            continue;
        };
        let id = stem
            .split_once('_')
            .and_then(|(id, rating)| {
                rating.parse::<u32>().ok()?;
                id.parse::<u64>().ok()
            })
            .ok_or_else(|| DataError::Invalid {
                path: path.clone(),
                msg: "review file name is not <id>_<rating>.txt".to_string(),
            })?;
        v.push((id, name, path));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{fixtures_dir, load_split, test_assets_data_dir, Task};
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn labels(ex: &[Example]) -> Vec<usize> {
        ex.iter()
            .map(|e| match e.label {
                Some(Label::Class(c)) => c,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn expected_fixture() -> Vec<(&'static str, usize)> {
        vec![
            ("This film was a mess, and the ending made no sense.", 0),
            ("Boring. I \"tried\" to like it.<br /><br />I could not.", 0),
            ("A delight\tfrom start to finish.", 1),
            ("Loved it, line one\nand line two.", 1),
        ]
    }

    fn check_fixture(ex: &[Example]) {
        let got: Vec<(&str, usize)> = ex
            .iter()
            .map(|e| e.text_a.as_str())
            .zip(labels(ex))
            .collect();
        assert_eq!(got, expected_fixture());
        assert!(ex
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i && e.text_b.is_none()));
    }

    #[test]
    fn csv_fixture() {
        let dir = fixtures_dir().join("imdb");
        check_fixture(&load_split(Task::Imdb, &dir, "test", None).unwrap());
        // dev is an alias of test
        check_fixture(&load_split(Task::Imdb, &dir, "dev", None).unwrap());
        let two = load_split(Task::Imdb, &dir, "test", Some(2)).unwrap();
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn review_tree_fixture_matches_csv_order() {
        // Both `<dir>/aclImdb/test` and `<dir>/test` layouts; numeric id order (2 before 10).
        check_fixture(&load_split(Task::Imdb, &fixtures_dir(), "test", None).unwrap());
        let acl = fixtures_dir().join("aclImdb");
        check_fixture(&load_split(Task::Imdb, &acl, "dev", None).unwrap());
        let three = load_split(Task::Imdb, &acl, "test", Some(3)).unwrap();
        assert_eq!(labels(&three), vec![0, 0, 1]);
    }

    #[test]
    fn gzip_multi_member() {
        let csv = std::fs::read(fixtures_dir().join("imdb/test.csv")).unwrap();
        let (a, b) = csv.split_at(csv.len() / 2);
        let tmp = tempfile::tempdir().unwrap();
        let mut f = File::create(tmp.path().join("train.csv.gz")).unwrap();
        for part in [a, b] {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(part).unwrap();
            f.write_all(&enc.finish().unwrap()).unwrap();
        }
        drop(f);
        check_fixture(&load(tmp.path(), "train", None).unwrap());
    }

    #[test]
    fn bad_label_reports_physical_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("test.csv");
        // Record 1 spans lines 2-3, so the bad record starts on line 4.
        std::fs::write(&p, "text,label\n\"a\nb\",0\nc,7\n").unwrap();
        let err = load(tmp.path(), "test", None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Malformed { line: 4, .. }), "{msg}");
        assert!(
            msg.contains(&format!("{}:4:", p.display())) && msg.contains("'7'"),
            "{msg}"
        );
    }

    #[test]
    fn missing_column_and_bad_header() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("test.csv"),
            "text,label\nfine,1\nno label\n",
        )
        .unwrap();
        let msg = load(tmp.path(), "test", None).unwrap_err().to_string();
        assert!(
            msg.contains("test.csv:3:") && msg.contains("expected 2 fields"),
            "{msg}"
        );

        std::fs::write(tmp.path().join("train.csv"), "review,sentiment\nx,1\n").unwrap();
        let msg = load(tmp.path(), "train", None).unwrap_err().to_string();
        assert!(
            msg.contains("train.csv:1:") && msg.contains("'label'"),
            "{msg}"
        );
    }

    #[test]
    fn header_columns_found_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("test.csv"),
            "\u{feff}label,text\n1,\"good, really\"\n",
        )
        .unwrap();
        let ex = load(tmp.path(), "test", None).unwrap();
        assert_eq!(ex[0].text_a, "good, really");
        assert_eq!(ex[0].label, Some(Label::Class(1)));
    }

    #[test]
    fn bad_review_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("test");
        std::fs::create_dir_all(t.join("neg")).unwrap();
        std::fs::create_dir_all(t.join("pos")).unwrap();
        std::fs::write(t.join("neg/notes.md"), "ignored").unwrap();
        std::fs::write(t.join("pos/review.txt"), "x").unwrap();
        let msg = load(tmp.path(), "test", None).unwrap_err().to_string();
        assert!(
            msg.contains("review.txt") && msg.contains("<id>_<rating>"),
            "{msg}"
        );
    }

    #[test]
    fn missing_split_lists_tried_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        let msg = load(tmp.path(), "dev", None).unwrap_err().to_string();
        assert!(
            msg.contains("test.csv.gz") && msg.contains("aclImdb/test"),
            "{msg}"
        );
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    }

    // ---- real data (../shared or $KD_ASSETS); fails when absent ----

    fn real_dir() -> PathBuf {
        test_assets_data_dir().join("imdb")
    }

    #[test]
    fn real_imdb_test_first_1000() {
        let ex = load_split(Task::Imdb, &real_dir(), "test", Some(1000)).unwrap();
        assert_eq!(ex.len(), 1000);
        // Negatives come first, so the first 1000 rows are all label 0.
        assert!(labels(&ex).iter().all(|&l| l == 0));
        assert_eq!(ex[999].index, 999);
        assert!(ex[0]
            .text_a
            .starts_with("Once again Mr. Costner has dragged out a movie"));
    }

    #[test]
    fn real_imdb_train_first_row() {
        let ex = load_split(Task::Imdb, &real_dir(), "train", Some(1)).unwrap();
        assert_eq!(ex.len(), 1);
        assert!(
            ex[0]
                .text_a
                .starts_with("Story of a man who has unnatural feelings for a pig"),
            "{}",
            ex[0].text_a
        );
        assert_eq!(ex[0].label, Some(Label::Class(0)));
    }

    #[test]
    fn real_imdb_test_full_balance() {
        // Decompressing 25k reviews is quick in release but slow unoptimized.
        if cfg!(debug_assertions) {
            return;
        }
        let ex = load_split(Task::Imdb, &real_dir(), "test", None).unwrap();
        assert_eq!(ex.len(), 25_000);
        assert_eq!(labels(&ex).iter().filter(|&&l| l == 1).count(), 12_500);
    }
}
