//! Reader for GLUE task files in the layout written by the standard GLUE download script
//! (`glue_data/<TASK>/{train,dev,test}.tsv`; MNLI uses `dev_matched.tsv`, `dev_mismatched.tsv`,
//! `test_matched.tsv`, `test_mismatched.tsv`).
//!
//! Column layouts follow the GLUE processors of HF transformers
//! (`transformers/data/processors/glue.py`) and the GLUE benchmark files themselves
//! (Wang et al., 2019, <https://gluebenchmark.com>):
//!
//! | task  | header | text_a | text_b | label            | test: text_a, text_b |
//! |-------|--------|--------|--------|------------------|----------------------|
//! | CoLA  | none, 4 columns | 3 | –  | 1 (`0`/`1`)       | header `index sentence`: 1 |
//! | SST-2 | yes    | 0      | –      | 1 (`0`/`1`)       | 1                    |
//! | MRPC  | yes (UTF-8 BOM) | 3 | 4  | 0 (`0`/`1`)       | 3, 4                 |
//! | STS-B | yes, 10 columns | 7 | 8  | 9 (float score)   | 7, 8                 |
//! | QQP   | yes    | 3      | 4      | 5 (`0`/`1`)       | 1, 2                 |
//! | MNLI  | yes    | 8      | 9      | last (`contradiction`/`entailment`/`neutral`) | 8, 9 |
//! | QNLI, RTE | yes | 1     | 2      | last (`entailment`/`not_entailment`) | 1, 2 |
//! | WNLI  | yes    | 1      | 2      | last (`0`/`1`)    | 1, 2                 |
//!
//! Lines are split on tabs only, with no quote handling: GLUE sentences contain bare `"`
//! characters and the processors read with `quotechar=None`. A UTF-8 BOM at the start of
//! the file (present in MRPC's header) is dropped and `\r\n` endings are accepted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{DataError, Example, Label, Task};

/// Where the label sits in a row.
#[derive(Debug, Clone, Copy)]
enum LabelCol {
    At(usize),
    /// Last column: MNLI train (12 columns) and dev (16 columns) differ in width.
    Last,
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Column count for headerless files (CoLA train/dev); `None` = first line is a header
    /// and fixes the column count.
    fixed_cols: Option<usize>,
    text_a: usize,
    text_b: Option<usize>,
    label: Option<LabelCol>,
}

fn layout(task: Task, test: bool) -> Layout {
    let hdr = |text_a, text_b, label| Layout {
        fixed_cols: None,
        text_a,
        text_b,
        label,
    };
    use LabelCol::{At, Last};
    match (task, test) {
        (Task::Cola, false) => Layout {
            fixed_cols: Some(4),
            text_a: 3,
            text_b: None,
            label: Some(At(1)),
        },
        (Task::Cola, true) => hdr(1, None, None),
        (Task::Sst2, false) => hdr(0, None, Some(At(1))),
        (Task::Sst2, true) => hdr(1, None, None),
        (Task::Mrpc, false) => hdr(3, Some(4), Some(At(0))),
        (Task::Mrpc, true) => hdr(3, Some(4), None),
        (Task::Stsb, false) => hdr(7, Some(8), Some(At(9))),
        (Task::Stsb, true) => hdr(7, Some(8), None),
        (Task::Qqp, false) => hdr(3, Some(4), Some(At(5))),
        (Task::Qqp, true) => hdr(1, Some(2), None),
        (Task::Mnli, false) => hdr(8, Some(9), Some(Last)),
        (Task::Mnli, true) => hdr(8, Some(9), None),
        (Task::Qnli | Task::Rte | Task::Wnli, false) => hdr(1, Some(2), Some(Last)),
        (Task::Qnli | Task::Rte | Task::Wnli, true) => hdr(1, Some(2), None),
        // IMDb is not a TSV task; `load` routes it to the IMDb reader before we get here.
        (Task::Imdb, _) => hdr(0, None, Some(At(1))),
    }
}

/// File name of a split: `{split}.tsv`, except that MNLI's `dev`/`test` mean the matched sets.
pub fn split_file_name(task: Task, split: &str) -> String {
    match (task, split) {
        (Task::Mnli, "dev") => "dev_matched.tsv".to_string(),
        (Task::Mnli, "test") => "test_matched.tsv".to_string(),
        _ => format!("{split}.tsv"),
    }
}

/// Test splits (`test`, `test_matched`, ...) are unlabeled and use the test column layout.
fn is_test_split(file_name: &str) -> bool {
    file_name.starts_with("test")
}

/// Load `split` of a GLUE `task` from its directory (e.g. `glue_data/SST-2`).
/// See [`super::load_split`] for the meaning of `split` and `limit`.
pub fn load(
    task: Task,
    dir: &Path,
    split: &str,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    if task == Task::Imdb {
        return super::imdb::load(dir, split, limit);
    }
    let name = split_file_name(task, split);
    let path = dir.join(&name);
    if !path.is_file() {
        return Err(DataError::MissingSplit {
            task: task.name().to_string(),
            split: split.to_string(),
            dir: dir.to_path_buf(),
            tried: name,
        });
    }
    read_tsv(task, &path, is_test_split(&name), limit)
}

/// Read one GLUE TSV file. `test` selects the unlabeled test layout.
pub fn read_tsv(
    task: Task,
    path: &Path,
    test: bool,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let lay = layout(task, test);
    let label_names = task.label_names();

    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    // Column count every row must have; set by the header or the fixed layout.
    let mut ncols = lay.fixed_cols;
    let mut label_idx = None;
    // First blank line seen; blank lines are only tolerated at the end of the file.
    let mut blank_at: Option<usize> = None;

    loop {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line = decode_line(&buf, line_no == 1)
            .map_err(|msg| DataError::malformed(path, line_no, msg))?;
        if line.is_empty() {
            blank_at.get_or_insert(line_no);
            continue;
        }
        if let Some(b) = blank_at {
            return Err(DataError::malformed(
                path,
                b,
                "empty line before the end of the file",
            ));
        }
        let cols: Vec<&str> = line.split('\t').collect();

        let expected = match ncols {
            Some(c) => c,
            None => {
                // Header line: it fixes the column count; check the layout fits in it.
                let c = cols.len();
                let needed = [Some(lay.text_a), lay.text_b]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(0)
                    + 1;
                let needed = match lay.label {
                    Some(LabelCol::At(i)) => needed.max(i + 1),
                    Some(LabelCol::Last) => needed + 1,
                    None => needed,
                };
                if c < needed {
                    return Err(DataError::malformed(
                        path,
                        line_no,
                        format!(
                            "header has {c} column(s), but the {} {} layout needs at least {needed}",
                            task.default_dir_name(),
                            if test { "test" } else { "train/dev" }
                        ),
                    ));
                }
                ncols = Some(c);
                continue;
            }
        };
        if cols.len() != expected {
            return Err(DataError::malformed(
                path,
                line_no,
                format!(
                    "expected {expected} tab-separated columns, found {}",
                    cols.len()
                ),
            ));
        }
        let li = *label_idx.get_or_insert_with(|| match lay.label {
            Some(LabelCol::At(i)) => Some(i),
            Some(LabelCol::Last) => Some(expected - 1),
            None => None,
        });
        let label = match li {
            None => None,
            Some(i) => Some(
                parse_label(task, &label_names, cols[i])
                    .map_err(|msg| DataError::malformed(path, line_no, msg))?,
            ),
        };
        out.push(Example {
            index: out.len(),
            text_a: cols[lay.text_a].to_string(),
            text_b: lay.text_b.map(|i| cols[i].to_string()),
            label,
        });
    }
    Ok(out)
}

/// Texts of one output row: `text_a` and, for pair tasks, `text_b`.
pub type RowTexts = (String, Option<String>);

/// Copy a labeled GLUE train/dev file to `out`, writing after data row i the rows of
/// `extra[i]`: the same columns (label, ids, genre...) with `text_a`/`text_b` replaced. The
/// header (if the layout has one) is kept; every line ends in `\n`. The caller has parsed `src`
/// with [`read_tsv`] (so it is well formed) and passes one entry per data row; a file whose row
/// count differs (changed in between) is an error. Texts must not contain tabs or line breaks.
pub fn expand_rows(task: Task, src: &Path, extra: Vec<Vec<RowTexts>>, out: &mut Vec<u8>) -> Result<(), DataError> {
    let lay = layout(task, false);
    let bytes = std::fs::read(src).map_err(|e| DataError::io(src, e))?;
    let mut extra = extra.into_iter();
    let mut header_seen = lay.fixed_cols.is_some();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = decode_line(raw, i == 0).map_err(|msg| DataError::malformed(src, i + 1, msg))?;
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        if !header_seen {
            header_seen = true;
            continue;
        }
        let rows = extra.next().ok_or_else(|| DataError::malformed(src, i + 1, "more rows than when the file was read"))?;
        let cols: Vec<&str> = line.split('\t').collect();
        for (a, b) in rows {
            let mut row: Vec<&str> = cols.clone();
            row[lay.text_a] = &a;
            if let (Some(bi), Some(b)) = (lay.text_b, b.as_deref()) {
                row[bi] = b;
            }
            debug_assert!(row.iter().all(|c| !c.contains(['\t', '\n', '\r'])));
            out.extend_from_slice(row.join("\t").as_bytes());
            out.push(b'\n');
        }
    }
    if extra.next().is_some() {
        return Err(DataError::Invalid { path: src.to_path_buf(), msg: "fewer rows than when the file was read".into() });
    }
    Ok(())
}

/// Line bytes to text without the line ending (and without the BOM on the first line).
fn decode_line(buf: &[u8], first: bool) -> Result<&str, String> {
    let mut b = buf.strip_suffix(b"\n").unwrap_or(buf);
    b = b.strip_suffix(b"\r").unwrap_or(b);
    let s = std::str::from_utf8(b).map_err(|e| format!("invalid UTF-8: {e}"))?;
    Ok(if first {
        s.strip_prefix('\u{feff}').unwrap_or(s)
    } else {
        s
    })
}

fn parse_label(task: Task, names: &[String], raw: &str) -> Result<Label, String> {
    let s = raw.trim();
    if task.is_regression() {
        return match s.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(Label::Score(v)),
            _ => Err(format!("label '{raw}' is not a finite number")),
        };
    }
    names
        .iter()
        .position(|n| n == s)
        .map(Label::Class)
        .ok_or_else(|| format!("label '{raw}' is not one of {names:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{fixtures_dir, load_split, test_assets_data_dir};
    use std::io::Write;
    use std::path::PathBuf;

    fn fixture(task: Task) -> PathBuf {
        fixtures_dir().join("glue").join(task.default_dir_name())
    }

    fn class(e: &Example) -> usize {
        match e.label {
            Some(Label::Class(c)) => c,
            other => panic!("expected a class label, got {other:?}"),
        }
    }

    fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    #[test]
    fn sst2_fixture() {
        let ex = load_split(Task::Sst2, &fixture(Task::Sst2), "dev", None).unwrap();
        assert_eq!(ex.len(), 4);
        assert_eq!(ex[0].index, 0);
        assert_eq!(
            ex[0].text_a,
            "a warm , funny and quietly \"clever\" little film "
        );
        assert_eq!(ex[0].text_b, None);
        assert_eq!(ex.iter().map(class).collect::<Vec<_>>(), vec![1, 0, 0, 1]);
        let test = load_split(Task::Sst2, &fixture(Task::Sst2), "test", None).unwrap();
        assert_eq!(test.len(), 2);
        assert_eq!(test[1].text_a, "the plot never quite gets off the ground .");
        assert!(test.iter().all(|e| e.label.is_none()));
    }

    #[test]
    fn cola_fixture_headerless() {
        let ex = load_split(Task::Cola, &fixture(Task::Cola), "dev", None).unwrap();
        // The last line of the fixture has no trailing newline, like the real CoLA dev.tsv.
        assert_eq!(ex.len(), 4);
        assert_eq!(ex[0].text_a, "The cat sat on the mat.");
        // The `*` of ungrammatical rows lives in column 2, not in the sentence.
        assert_eq!(ex[1].text_a, "Mat the on sat cat the.");
        assert_eq!(ex.iter().map(class).collect::<Vec<_>>(), vec![1, 0, 1, 0]);
        let test = load_split(Task::Cola, &fixture(Task::Cola), "test", None).unwrap();
        assert_eq!(test.len(), 2);
        assert_eq!(test[0].text_a, "Birds sing in the morning.");
        assert!(test[0].label.is_none());
    }

    #[test]
    fn mrpc_fixture_bom_and_quotes() {
        let ex = load_split(Task::Mrpc, &fixture(Task::Mrpc), "dev", None).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(
            ex[0].text_a,
            "The company said \" we are pleased \" with the result ."
        );
        assert_eq!(
            ex[0].text_b.as_deref(),
            Some("\" We are pleased , \" the company said of the result .")
        );
        assert_eq!(ex.iter().map(class).collect::<Vec<_>>(), vec![1, 0, 1]);
        let test = load_split(Task::Mrpc, &fixture(Task::Mrpc), "test", None).unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(
            test[0].text_b.as_deref(),
            Some("Shares rose 3 percent on Monday .")
        );
    }

    #[test]
    fn stsb_fixture_scores() {
        let ex = load_split(Task::Stsb, &fixture(Task::Stsb), "dev", None).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].text_a, "A dog runs in the park.");
        assert_eq!(ex[0].text_b.as_deref(), Some("A dog is running in a park."));
        assert_eq!(ex[0].label, Some(Label::Score(4.8)));
        assert_eq!(ex[2].label, Some(Label::Score(0.0)));
    }

    #[test]
    fn rte_qnli_wnli_mnli_qqp_fixtures() {
        let rte = load_split(Task::Rte, &fixture(Task::Rte), "dev", None).unwrap();
        assert_eq!(rte.len(), 3);
        assert_eq!(rte.iter().map(class).collect::<Vec<_>>(), vec![0, 1, 0]);
        assert_eq!(
            rte[1].text_b.as_deref(),
            Some("The museum is closed on Mondays.")
        );

        let qnli = load_split(Task::Qnli, &fixture(Task::Qnli), "dev", None).unwrap();
        assert_eq!(qnli.iter().map(class).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(qnli[0].text_a, "Where was the bridge built?");

        let wnli = load_split(Task::Wnli, &fixture(Task::Wnli), "dev", None).unwrap();
        assert_eq!(wnli.iter().map(class).collect::<Vec<_>>(), vec![1, 0]);

        // MNLI dev has 16 columns with gold_label last; "dev" means dev_matched.
        let mnli = load_split(Task::Mnli, &fixture(Task::Mnli), "dev", None).unwrap();
        assert_eq!(mnli.iter().map(class).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(mnli[0].text_a, "The river was quiet that morning.");
        assert_eq!(
            mnli[0].text_b.as_deref(),
            Some("Nobody was near the river.")
        );
        let mm = load_split(Task::Mnli, &fixture(Task::Mnli), "dev_mismatched", None).unwrap();
        assert_eq!(mm.iter().map(class).collect::<Vec<_>>(), vec![1]);
        let mt = load_split(Task::Mnli, &fixture(Task::Mnli), "test", None).unwrap();
        assert_eq!(mt.len(), 1);
        assert!(mt[0].label.is_none());
        assert_eq!(mt[0].text_b.as_deref(), Some("The bakery sells bread."));

        let qqp = load_split(Task::Qqp, &fixture(Task::Qqp), "dev", None).unwrap();
        assert_eq!(qqp.iter().map(class).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(qqp[0].text_a, "How do I learn to cook rice?");
        let qt = load_split(Task::Qqp, &fixture(Task::Qqp), "test", None).unwrap();
        assert_eq!(
            qt[0].text_b.as_deref(),
            Some("Which fruit is the healthiest?")
        );
    }

    #[test]
    fn limit_stops_early() {
        let ex = load_split(Task::Sst2, &fixture(Task::Sst2), "dev", Some(2)).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].index, 1);
        let none = load_split(Task::Sst2, &fixture(Task::Sst2), "dev", Some(0)).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn crlf_bom_and_trailing_blank_lines() {
        let tmp = tempfile::tempdir().unwrap();
        write_tmp(
            tmp.path(),
            "dev.tsv",
            b"\xef\xbb\xbfindex\tsentence1\tsentence2\tlabel\r\n0\ta\tb\tentailment\r\n1\tc \"d\te\tnot_entailment\r\n\r\n\n",
        );
        let ex = load(Task::Rte, tmp.path(), "dev", None).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].text_a, "c \"d");
        assert_eq!(ex[1].label, Some(Label::Class(1)));
    }

    #[test]
    fn wrong_column_count_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_tmp(tmp.path(), "dev.tsv", b"sentence\tlabel\nok\t1\nbad row\n");
        let err = load(Task::Sst2, tmp.path(), "dev", None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Malformed { line: 3, .. }), "{msg}");
        assert!(msg.contains(&format!("{}:3:", p.display())), "{msg}");
        assert!(msg.contains("expected 2"), "{msg}");

        // Headerless CoLA must have exactly 4 columns.
        write_tmp(tmp.path(), "train.tsv", b"src\t1\t\tfine.\nsrc\t0\t*\n");
        let err = load(Task::Cola, tmp.path(), "train", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.tsv:2:") && err.contains("expected 4"),
            "{err}"
        );
    }

    #[test]
    fn bad_label_names_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        write_tmp(
            tmp.path(),
            "dev.tsv",
            b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n",
        );
        let err = load(Task::Rte, tmp.path(), "dev", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.tsv:3:") && err.contains("contradiction"),
            "{err}"
        );

        write_tmp(tmp.path(), "train.tsv", b"sentence\tlabel\nx\t2\n");
        let err = load(Task::Sst2, tmp.path(), "train", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.tsv:2:") && err.contains("'2'"), "{err}");

        let stsb_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n";
        let row = "0\tg\tf\t2012\t0\tnone\tnone\ta\tb\tNaN\n";
        write_tmp(
            tmp.path(),
            "bad.tsv",
            format!("{stsb_header}{row}").as_bytes(),
        );
        let err = read_tsv(Task::Stsb, &tmp.path().join("bad.tsv"), false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:") && err.contains("finite"), "{err}");
    }

    #[test]
    fn blank_line_in_the_middle_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_tmp(tmp.path(), "dev.tsv", b"sentence\tlabel\na\t1\n\nb\t0\n");
        let err = load(Task::Sst2, tmp.path(), "dev", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dev.tsv:3:"), "{err}");
    }

    #[test]
    fn header_too_narrow_and_bad_utf8() {
        let tmp = tempfile::tempdir().unwrap();
        // An SST-2 file handed to the MRPC reader: the header is too narrow.
        write_tmp(tmp.path(), "dev.tsv", b"sentence\tlabel\na\t1\n");
        let err = load(Task::Mrpc, tmp.path(), "dev", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.tsv:1:") && err.contains("header"),
            "{err}"
        );

        write_tmp(tmp.path(), "train.tsv", b"sentence\tlabel\na\xff\t1\n");
        let err = load(Task::Sst2, tmp.path(), "train", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.tsv:2:") && err.contains("UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn missing_split_names_dir_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load(Task::Mnli, tmp.path(), "dev", None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingSplit { .. }), "{msg}");
        assert!(msg.contains("dev_matched.tsv"), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    }

    // ---- real data (../shared or $KD_ASSETS); fails when absent ----

    fn real(task: Task, split: &str) -> Vec<Example> {
        let dir = test_assets_data_dir()
            .join("glue")
            .join(task.default_dir_name());
        load_split(task, &dir, split, None)
            .unwrap_or_else(|e| panic!("loading real {} {split}: {e}", task.name()))
    }

    fn count_class(ex: &[Example], c: usize) -> usize {
        ex.iter()
            .filter(|e| e.label == Some(Label::Class(c)))
            .count()
    }

    #[test]
    fn real_sst2_dev() {
        let ex = real(Task::Sst2, "dev");
        assert_eq!(ex.len(), 872);
        assert_eq!(count_class(&ex, 1), 444);
        assert_eq!(ex.last().map(|e| e.index), Some(871));
    }

    #[test]
    fn real_cola_dev() {
        let ex = real(Task::Cola, "dev");
        assert_eq!(ex.len(), 1043);
        assert_eq!(count_class(&ex, 1), 721);
        assert_eq!(
            ex[0].text_a,
            "The sailors rode the breeze clear of the rocks."
        );
    }

    #[test]
    fn real_mrpc_dev() {
        let ex = real(Task::Mrpc, "dev");
        assert_eq!(ex.len(), 408);
        assert_eq!(count_class(&ex, 1), 279);
        assert!(ex.iter().all(|e| e.text_b.is_some()));
    }

    #[test]
    fn real_stsb_dev() {
        let ex = real(Task::Stsb, "dev");
        assert_eq!(ex.len(), 1500);
        let scores: Vec<f64> = ex
            .iter()
            .map(|e| match e.label {
                Some(Label::Score(s)) => s as f64,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(scores.iter().all(|s| (0.0..=5.0).contains(s)));
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!((mean - 2.364).abs() < 5e-4, "mean {mean}");
    }

    #[test]
    fn real_rte_dev() {
        let ex = real(Task::Rte, "dev");
        assert_eq!(ex.len(), 277);
        assert_eq!(count_class(&ex, 0), 146); // entailment
    }

    #[test]
    fn real_qnli_dev() {
        let ex = real(Task::Qnli, "dev");
        assert_eq!(ex.len(), 5463);
        assert_eq!(count_class(&ex, 0), 2702); // entailment
        assert_eq!(
            ex[0].text_a,
            "What came into force after the new constitution was herald?"
        );
    }

    #[test]
    fn real_wnli_dev() {
        let ex = real(Task::Wnli, "dev");
        assert_eq!(ex.len(), 71);
        assert_eq!(count_class(&ex, 1), 31);
    }
}
